"""Multi-label triplets: positives share a label, negatives share none, weights as single-label.

References are float64 NumPy written here from the formulas (docs/method.md section 2.2 and
the ``sample_triplets`` docstring): the hard-probability weights over the eligible negatives,
where "eligible" is now "shares no label with the anchor".
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.ops.sampling import hpsh_negative_probabilities, sample_triplets

K = 3


def _batch(seed=0, blocks=4, classes=6, dim=16):
    """Blocks of K rows that all carry the block's label, plus random extra labels."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((blocks * K, classes)) < 0.2).astype(np.int32)
    block_label = rng.permutation(classes)[:blocks]
    labels[np.arange(blocks * K), np.repeat(block_label, K)] = 1
    scores = rng.random((blocks * K, dim)).astype(np.float32)
    e = scores / np.linalg.norm(scores, axis=1, keepdims=True)
    return e, labels


def _ref_hpsh(e, labels, cutoff=0.5, nzc=0.9):
    e = e.astype(np.float64)
    n, d = e.shape
    dist = np.maximum(np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1)), cutoff)
    log_w = (2.0 - d) * np.log(dist) - ((d - 3.0) / 2.0) * np.log(1.0 - dist**2 / 4.0)
    shares = (labels @ labels.T) > 0
    probs = np.zeros((n, n))
    for i in range(n):
        negative = ~shares[i]
        eligible = negative & (dist[i] < nzc)
        if eligible.any():
            w = np.where(eligible, np.exp(log_w[i] - log_w[i][eligible].max()), 0.0)
        else:
            w = negative.astype(np.float64)
        probs[i] = w / w.sum()
    return probs


@pytest.mark.parametrize("nzc", [0.9, 1.4])
def test_hpsh_probabilities_over_rows_sharing_no_label(nzc):
    e, labels = _batch(1)
    probs = hpsh_negative_probabilities(
        tf.constant(e), tf.constant(labels), samples_per_class=K, nonzero_loss_cutoff=nzc
    ).numpy()
    np.testing.assert_allclose(probs, _ref_hpsh(e, labels, nzc=nzc), atol=1e-5)
    assert probs[(labels @ labels.T) > 0].max() == 0.0


@pytest.mark.parametrize("mode", ["hpsh", "random", "semihard", "hard"])
@pytest.mark.parametrize("graph", [False, True])
def test_positives_share_a_label_and_negatives_share_none(mode, graph):
    e, labels = _batch(2)

    def draw(e, labels):
        return sample_triplets(e, labels, samples_per_class=K, mode=mode, seed=tf.constant([3, 4]))

    call = tf.function(draw) if graph else draw
    anchors, positives, negatives = (t.numpy() for t in call(tf.constant(e), tf.constant(labels)))
    shared = labels @ labels.T
    assert (shared[anchors, positives] >= 1).all()
    has_negative = (shared == 0).any(axis=1)[anchors]
    assert has_negative.mean() > 0.5  # the case is not vacuous
    assert (shared[anchors, negatives][has_negative] == 0).all()
    np.testing.assert_array_equal(negatives[~has_negative], anchors[~has_negative])
    assert len(anchors) == len(labels) * (K - 1)


def test_one_hot_labels_draw_the_single_label_triplets():
    e, _ = _batch(3)
    single = np.repeat(np.arange(4), K)
    one_hot = np.eye(4, dtype=np.int32)[single]
    for mode in ("hpsh", "random", "semihard", "hard"):
        kwargs = {"samples_per_class": K, "mode": mode, "seed": tf.constant([5, 6])}
        plain = sample_triplets(tf.constant(e), tf.constant(single), **kwargs)
        multi = sample_triplets(tf.constant(e), tf.constant(one_hot), **kwargs)
        for a, b in zip(plain, multi):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_an_anchor_sharing_a_label_with_every_row_takes_itself_as_negative():
    e, labels = _batch(4, blocks=3)
    labels[0] = 1  # row 0 carries every label: nothing is a negative for it
    anchors, _, negatives = sample_triplets(
        tf.constant(e), tf.constant(labels), samples_per_class=K, seed=tf.constant([1, 2])
    )
    anchors, negatives = anchors.numpy(), negatives.numpy()
    np.testing.assert_array_equal(negatives[anchors == 0], 0)
    probs = hpsh_negative_probabilities(
        tf.constant(e), tf.constant(labels), samples_per_class=K
    ).numpy()
    np.testing.assert_allclose(probs[0], np.eye(len(labels))[0])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    shared = labels @ labels.T
    assert (shared[anchors[anchors != 0], negatives[anchors != 0]] == 0).all()


def test_jit_compiled_multi_label_draws():
    e, labels = _batch(5)
    draw = tf.function(
        lambda e, y: sample_triplets(e, y, samples_per_class=K, seed=tf.constant([1, 1])),
        jit_compile=True,
    )
    anchors, _, negatives = (t.numpy() for t in draw(tf.constant(e), tf.constant(labels)))
    shared = labels @ labels.T
    has_negative = (shared == 0).any(axis=1)[anchors]
    assert (shared[anchors, negatives][has_negative] == 0).all()


def test_block_without_a_common_label_is_refused_eagerly_and_in_a_graph():
    e, labels = _batch(6)
    labels[:K] = 0
    labels[0, 0] = labels[1, 1] = labels[2, 2] = 1  # block 0 shares no label
    with pytest.raises(ValueError, match="block 0 with no label shared"):
        sample_triplets(tf.constant(e), tf.constant(labels), samples_per_class=K)
    graph = tf.function(lambda e, y: sample_triplets(e, y, samples_per_class=K))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must share a label"):
        graph(tf.constant(e), tf.constant(labels))


def test_original_mode_refuses_multi_hot_labels():
    e, labels = _batch(7)
    with pytest.raises(ValueError, match="mode='original' with multi-hot"):
        sample_triplets(tf.constant(e), tf.constant(labels), samples_per_class=K, mode="original")
