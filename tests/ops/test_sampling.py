"""Tests of hpsh_tf2.ops.sampling against float64 NumPy references written here."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.ops.sampling import (
    hpsh_negative_probabilities,
    original_negative_probabilities,
    sample_triplets,
)
from tests.conftest import separated_binary_codes


# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.maximum((x**2).sum(1, keepdims=True), 1e-10))


def _euclid(e: np.ndarray) -> np.ndarray:
    e = np.asarray(e, np.float64)
    return np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1))


def _ref_hpsh(e: np.ndarray, labels: np.ndarray, cutoff: float, nzc: float) -> np.ndarray:
    n, d = e.shape
    dist = np.maximum(_euclid(e), cutoff)
    log_w = (2.0 - d) * np.log(dist) - ((d - 3.0) / 2.0) * np.log(1.0 - dist**2 / 4.0)
    probs = np.zeros((n, n))
    for i in range(n):
        negative = labels != labels[i]
        eligible = negative & (dist[i] < nzc)
        if eligible.any():
            w = np.where(eligible, np.exp(log_w[i] - log_w[i][eligible].max()), 0.0)
        else:
            w = negative.astype(np.float64)
        probs[i] = w / w.sum()
    return probs


def _ref_original(e: np.ndarray, k: int, cutoff: float = 0.5, nzc: float = 1.4) -> np.ndarray:
    e = np.asarray(e, np.float64)
    n, d = e.shape
    q = e**2
    dist = np.sqrt(q.sum(1)[:, None] + q.sum(1)[None, :] - 2 * q @ q.T + np.eye(n))
    dist = np.maximum(dist, cutoff)
    log_w = (2 - d) * np.log(dist) - ((d - 3) // 2) * np.log(1 - dist**2 / 4)
    w = np.exp(log_w - log_w.max())
    block = np.arange(n) // k
    w = w * ((block[:, None] != block[None, :]) & (dist < nzc))
    probs = np.zeros((n, n))
    for i in range(n):
        if w[i].sum() == 0:
            probs[i, 0] = 1.0  # the GPU kernel's answer for a NaN row
        else:
            logits = w[i] / w[i].sum()
            probs[i] = np.exp(logits) / np.exp(logits).sum()
    return probs


def _ref_anchor_positive(n: int, k: int) -> tuple[list[int], list[int]]:
    anchors, positives = [], []
    for i in range(n):
        for j in range(i // k * k, i // k * k + k):
            if j != i:
                anchors.append(i)
                positives.append(j)
    return anchors, positives


def _ref_semihard(e: np.ndarray, labels: np.ndarray, k: int) -> list[int]:
    dist = _euclid(e)
    out = []
    for a, p in zip(*_ref_anchor_positive(len(labels), k)):
        negs = [j for j in range(len(labels)) if labels[j] != labels[a]]
        farther = [j for j in negs if dist[a, j] > dist[a, p]]
        pool, pick = (farther, min) if farther else (negs, max)
        out.append(pick(pool, key=lambda j: dist[a, j]))
    return out


def _ref_hard(e: np.ndarray, labels: np.ndarray, k: int) -> list[int]:
    dist = _euclid(e)
    out = []
    for i in range(len(labels)):
        negs = [j for j in range(len(labels)) if labels[j] != labels[i]]
        out += [min(negs, key=lambda j: dist[i, j])] * (k - 1)
    return out


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
def _clustered_scores(classes: int, k: int, bits: int, seed: int, spread: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 1, bits)) * 2.0
    logits = centres + spread * rng.normal(size=(classes, k, bits))
    return (1.0 / (1.0 + np.exp(-logits))).reshape(classes * k, bits)


def _batch(classes: int, k: int, bits: int, seed: int = 0, spread: float = 1.0):
    e = _unit(_clustered_scores(classes, k, bits, seed, spread)).astype(np.float32)
    labels = np.repeat(np.arange(classes) * 3 + 1, k)  # non-contiguous label values
    return e, labels


def _binary_codes_64(classes: int, k: int, seed: int = 0) -> np.ndarray:
    """Unit rows of class-separated balanced 64-bit codes (see ``separated_binary_codes``)."""
    return _unit(separated_binary_codes(classes, k, seed=seed)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hpsh", "original", "random", "semihard", "hard"])
def test_anchor_positive_order_and_shapes(mode: str) -> None:
    e, labels = _batch(4, 3, 16)
    a, p, n = sample_triplets(
        e, labels, samples_per_class=3, mode=mode, nonzero_loss_cutoff=1.4, seed=[1, 2]
    )
    ref_a, ref_p = _ref_anchor_positive(12, 3)
    assert a.dtype == p.dtype == n.dtype == tf.int32
    assert a.numpy().tolist() == ref_a
    assert p.numpy().tolist() == ref_p
    assert n.shape == (12 * 2,)
    assert np.all((n.numpy() >= 0) & (n.numpy() < 12))


def test_labels_of_shape_n_by_1_accepted() -> None:
    e, labels = _batch(3, 4, 8)
    a1 = sample_triplets(e, labels, samples_per_class=4, mode="hard")
    a2 = sample_triplets(e, labels[:, None], samples_per_class=4, mode="hard")
    for x, y in zip(a1, a2):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


# --------------------------------------------------------------------------------------------
# probabilities
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("bits", "nzc"), [(4, 0.9), (32, 0.9), (32, 1.2), (16, 0.5)])
def test_hpsh_probabilities_match_reference(bits: int, nzc: float) -> None:
    e, labels = _batch(5, 4, bits, seed=bits, spread=1.5)
    got = hpsh_negative_probabilities(
        e, labels, samples_per_class=4, cutoff=0.5, nonzero_loss_cutoff=nzc
    ).numpy()
    ref = _ref_hpsh(e, labels, 0.5, nzc)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.all(got[labels[:, None] == labels[None, :]] == 0.0)


def test_hpsh_probabilities_use_real_valued_exponent() -> None:
    # d = 4 gives exponent 0.5 (an integer exponent would be 0): rows must still match.
    e, labels = _batch(3, 2, 4, seed=7, spread=2.0)
    got = hpsh_negative_probabilities(e, labels, samples_per_class=2, nonzero_loss_cutoff=1.9)
    ref = _ref_hpsh(e, labels, 0.5, 1.9)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("bits", [16, 32, 48])
def test_original_probabilities_match_reference(bits: int) -> None:
    e, labels = _batch(6, 5, bits, seed=bits)
    got = original_negative_probabilities(e, labels, samples_per_class=5).numpy()
    ref = _ref_original(e, 5)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # docs/method.md section 11.1: softmax of a probability vector keeps every column within
    # [1/(n-1+e), e/(n+1)].
    n = 30
    assert got.min() >= 1.0 / (n - 1 + np.e) - 1e-6
    assert got.max() <= np.e / (n + 1) + 1e-6


def test_original_probabilities_empty_rows_are_index0_at_64_bits() -> None:
    e = _binary_codes_64(6, 5)
    labels = np.repeat(np.arange(6), 5)
    ref = _ref_original(e, 5)
    empty = ref[:, 0] == 1.0
    assert empty.any()  # docs/method.md section 11.2: at K = 64 separated classes empty rows
    got = original_negative_probabilities(e, labels, samples_per_class=5).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    _, _, neg = sample_triplets(
        e, labels, samples_per_class=5, mode="original", nonzero_loss_cutoff=1.4, seed=[0, 1]
    )
    rows = np.repeat(np.arange(30), 4)
    assert np.all(neg.numpy()[empty[rows]] == 0)


def test_original_empty_rows_error_policy() -> None:
    e = _binary_codes_64(6, 5)
    labels = np.repeat(np.arange(6), 5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no eligible negative"):
        sample_triplets(
            e,
            labels,
            samples_per_class=5,
            mode="original",
            nonzero_loss_cutoff=1.4,
            empty_rows="error",
        )


def test_hpsh_all_masked_rows_fall_back_to_uniform_negatives() -> None:
    # A tiny nonzero_loss_cutoff masks everything: uniform over different-label rows.
    e, labels = _batch(4, 64, 32, seed=3)
    probs = hpsh_negative_probabilities(e, labels, samples_per_class=64, nonzero_loss_cutoff=0.01)
    probs = probs.numpy()
    negative = labels[:, None] != labels[None, :]
    np.testing.assert_allclose(probs, negative / negative.sum(1, keepdims=True), atol=1e-7)
    _, _, neg = sample_triplets(
        e, labels, samples_per_class=64, nonzero_loss_cutoff=0.01, seed=[4, 4]
    )
    anchors = np.repeat(np.arange(256), 63)
    assert np.all(labels[neg.numpy()] != labels[anchors])


def test_hpsh_64_bit_codes_no_nan_no_same_class() -> None:
    e = _binary_codes_64(8, 5, seed=2)
    labels = np.repeat(np.arange(8), 5)
    probs = hpsh_negative_probabilities(e, labels, samples_per_class=5).numpy()
    ref = _ref_hpsh(e, labels, 0.5, 0.9)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.all(probs[labels[:, None] == labels[None, :]] == 0.0)
    for draw in range(5):
        a, _, n = sample_triplets(e, labels, samples_per_class=5, seed=[draw, 9])
        assert np.all(labels[n.numpy()] != labels[a.numpy()])


# --------------------------------------------------------------------------------------------
# sampling frequencies
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["hpsh", "original", "random"])
def test_empirical_frequencies_match_probabilities(mode: str) -> None:
    k, classes, calls = 21, 3, 1000  # 20 draws per anchor and call: 20,000 per anchor
    e, labels = _batch(classes, k, 6, seed=11, spread=2.0)
    nzc = 1.4 if mode == "original" else 1.2
    n = classes * k
    if mode == "hpsh":
        probs = _ref_hpsh(e, labels, 0.5, nzc)
    elif mode == "original":
        probs = _ref_original(e, k, 0.5, nzc)
    else:
        negative = labels[:, None] != labels[None, :]
        probs = negative / negative.sum(1, keepdims=True)

    @tf.function
    def counts_for(seed: tf.Tensor) -> tf.Tensor:
        a, _, neg = sample_triplets(
            e, labels, samples_per_class=k, mode=mode, nonzero_loss_cutoff=nzc, seed=seed
        )
        return tf.math.bincount(a * n + neg, minlength=n * n, maxlength=n * n)

    total = np.zeros(n * n)
    for step in range(calls):
        total += counts_for(tf.constant([5, step])).numpy()
    draws = calls * (k - 1)
    freq = total.reshape(n, n) / draws
    sigma = np.sqrt(probs * (1 - probs) / draws)
    assert np.all(freq[probs == 0] == 0)
    assert np.all(np.abs(freq - probs) <= 5 * sigma + 1.0 / draws)


# --------------------------------------------------------------------------------------------
# deterministic modes
# --------------------------------------------------------------------------------------------
def test_semihard_and_hard_negatives_match_reference() -> None:
    e, labels = _batch(5, 4, 8, seed=5, spread=2.5)
    _, _, semi = sample_triplets(e, labels, samples_per_class=4, mode="semihard")
    _, _, hard = sample_triplets(e, labels, samples_per_class=4, mode="hard")
    assert semi.numpy().tolist() == _ref_semihard(e, labels, 4)
    assert hard.numpy().tolist() == _ref_hard(e, labels, 4)


# --------------------------------------------------------------------------------------------
# seeds, compilation, gradients
# --------------------------------------------------------------------------------------------
def test_stateless_seed_is_reproducible() -> None:
    e, labels = _batch(6, 5, 32)
    first = sample_triplets(e, labels, samples_per_class=5, seed=tf.constant([3, 7]))[2]
    again = sample_triplets(e, labels, samples_per_class=5, seed=np.array([3, 7], np.int64))[2]
    other = sample_triplets(e, labels, samples_per_class=5, seed=[3, 8])[2]
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert np.any(first.numpy() != other.numpy())


def test_stateful_draws_vary() -> None:
    e, labels = _batch(6, 5, 4, spread=3.0)
    kwargs = {"samples_per_class": 5, "mode": "random"}
    draws = [sample_triplets(e, labels, **kwargs)[2].numpy() for _ in range(3)]
    assert not (np.array_equal(draws[0], draws[1]) and np.array_equal(draws[1], draws[2]))


@pytest.mark.parametrize("mode", ["hpsh", "original", "random", "semihard", "hard"])
def test_jit_compile(mode: str) -> None:
    e, labels = _batch(5, 4, 32, seed=2)
    kwargs = {"samples_per_class": 4, "mode": mode, "nonzero_loss_cutoff": 1.4}
    fn = tf.function(lambda x, y, s: sample_triplets(x, y, seed=s, **kwargs), jit_compile=True)
    seed = tf.constant([1, 1])
    a, p, n = fn(tf.constant(e), tf.constant(labels), seed)
    ea, ep, en = sample_triplets(e, labels, seed=seed, **kwargs)
    np.testing.assert_array_equal(a.numpy(), ea.numpy())
    np.testing.assert_array_equal(p.numpy(), ep.numpy())
    np.testing.assert_array_equal(fn(tf.constant(e), tf.constant(labels), seed)[2].numpy(), n)
    if mode != "original":
        assert np.all(labels[n.numpy()] != labels[a.numpy()])
    if mode in ("semihard", "hard"):
        np.testing.assert_array_equal(n.numpy(), en.numpy())


def test_gradients_flow_through_gathered_rows() -> None:
    e, labels = _batch(4, 3, 16)
    x = tf.Variable(e)
    with tf.GradientTape() as tape:
        a, p, n = sample_triplets(x, labels, samples_per_class=3, seed=[0, 0])
        ea, ep, en = tf.gather(x, a), tf.gather(x, p), tf.gather(x, n)
        loss = tf.reduce_sum(tf.square(ea - ep)) - tf.reduce_sum(tf.square(ea - en))
    grad = tf.convert_to_tensor(tape.gradient(loss, x)).numpy()
    # d/dx of sum ||a - p||^2 - sum ||a - n||^2, accumulated per gathered row.
    a, p, n = a.numpy(), p.numpy(), n.numpy()
    expected = np.zeros_like(e, np.float64)
    np.add.at(expected, a, 2 * (e[a] - e[p]) - 2 * (e[a] - e[n]))
    np.add.at(expected, p, -2 * (e[a] - e[p]))
    np.add.at(expected, n, 2 * (e[a] - e[n]))
    np.testing.assert_allclose(grad, expected, atol=1e-5)
    assert np.abs(grad).sum() > 0


def test_half_precision_embeddings() -> None:
    e, labels = _batch(4, 3, 16)
    for dtype in (tf.float16, tf.bfloat16):
        _, _, n = sample_triplets(tf.cast(e, dtype), labels, samples_per_class=3, mode="hard")
        _, _, ref = sample_triplets(
            tf.cast(tf.cast(e, dtype), tf.float32), labels, samples_per_class=3, mode="hard"
        )
        np.testing.assert_array_equal(n.numpy(), ref.numpy())


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def test_argument_validation() -> None:
    e, labels = _batch(4, 3, 8)
    with pytest.raises(ValueError, match="samples_per_class=1"):
        sample_triplets(e, labels, samples_per_class=1)
    with pytest.raises(TypeError, match="samples_per_class"):
        sample_triplets(e, labels, samples_per_class=3.0)
    with pytest.raises(ValueError, match="mode='bogus'"):
        sample_triplets(e, labels, samples_per_class=3, mode="bogus")
    with pytest.raises(ValueError, match="multiple of samples_per_class"):
        sample_triplets(e, labels, samples_per_class=5)
    with pytest.raises(ValueError, match="cutoff=0"):
        sample_triplets(e, labels, samples_per_class=3, cutoff=0.0)
    with pytest.raises(ValueError, match="seed with shape"):
        sample_triplets(e, labels, samples_per_class=3, seed=[1, 2, 3])
    with pytest.raises(TypeError, match="seed of dtype"):
        sample_triplets(e, labels, samples_per_class=3, seed=[1.0, 2.0])
    with pytest.raises(ValueError, match="labels of length"):
        sample_triplets(e, labels[:-3], samples_per_class=3)
    with pytest.raises(ValueError, match="empty_rows"):
        sample_triplets(e, labels, samples_per_class=3, empty_rows="nan")


def test_label_validation_eager_and_graph() -> None:
    e, labels = _batch(4, 3, 8)
    broken = labels.copy()
    broken[1] = 99
    with pytest.raises(ValueError, match="same label in each consecutive block"):
        sample_triplets(e, broken, samples_per_class=3)
    with pytest.raises(ValueError, match="at least two classes"):
        sample_triplets(e, np.zeros(12, np.int64), samples_per_class=3)
    fn = tf.function(lambda x, y: sample_triplets(x, y, samples_per_class=3, mode="random"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="constant within blocks"):
        fn(tf.constant(e), tf.constant(broken))


def test_stateful_draws_under_jit_and_dynamic_shapes() -> None:
    e, labels = _batch(4, 5, 8)
    jit = tf.function(
        lambda x, y: sample_triplets(x, y, samples_per_class=5, mode="random"), jit_compile=True
    )
    a, _, n = jit(tf.constant(e), tf.constant(labels))
    assert np.all(labels[n.numpy()] != labels[a.numpy()])
    spec = [tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64)]
    dynamic = tf.function(
        lambda x, y: sample_triplets(x, y, samples_per_class=5, seed=[0, 3]), input_signature=spec
    )
    a, p, n = dynamic(e, labels)
    ref_a, ref_p = _ref_anchor_positive(20, 5)
    assert a.numpy().tolist() == ref_a and p.numpy().tolist() == ref_p
    assert np.all(labels[n.numpy()] != labels[a.numpy()])


def test_deprecated_seed_mode_is_the_original_sampler() -> None:
    e, labels = _batch(4, 5, 16, seed=6)
    kwargs = {"samples_per_class": 5, "nonzero_loss_cutoff": 1.4, "seed": [4, 2]}
    with pytest.warns(DeprecationWarning, match="mode='seed' is deprecated; use mode='original'"):
        old = sample_triplets(e, labels, mode="seed", **kwargs)
    new = sample_triplets(e, labels, mode="original", **kwargs)
    for got, ref in zip(old, new, strict=True):
        np.testing.assert_array_equal(got.numpy(), ref.numpy())
