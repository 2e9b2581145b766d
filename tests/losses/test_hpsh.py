"""Tests of hpsh_tf2.losses against NumPy references, hand-derived values and tfa golden values."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import LossConfig
from hpsh_tf2.losses import (
    HPSHLoss,
    LossWeights,
    TripletHardLoss,
    TripletSemiHardLoss,
    classification_loss,
    hpsh_loss,
    hpsh_triplet_loss,
    make_loss_weights,
    margin_loss,
    triplet_hard_loss,
    triplet_semihard_loss,
)
from hpsh_tf2.ops.sampling import sample_triplets
from hpsh_tf2.samplers import TripletSampler
from tests.conftest import separated_binary_codes

# Our copy of the tensorflow-addons golden values (compact: each input stored once).
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "tfa_triplet_losses.json"


def _golden_cases() -> list[dict]:
    if not GOLDEN.is_file():
        return [{"missing": str(GOLDEN)}]
    data = json.loads(GOLDEN.read_text())
    return [{**case, **data["inputs"][case["input"]]} for case in data["cases"]]


# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------
def _np_unit(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, np.float64)
    return s / np.sqrt(np.maximum((s**2).sum(1, keepdims=True), 1e-10))


def _np_logcosh(x: np.ndarray) -> np.ndarray:
    return np.log(np.cosh(x))


def _np_binarize(x: np.ndarray) -> np.ndarray:
    return (np.sign(x - 0.5) + 1) / 2


def _np_components(s, a, p, n, *, alpha, beta, qw, pw, bw, variant) -> dict[str, float]:
    s = np.asarray(s, np.float64)
    e = _np_unit(s)
    d_ap = np.sqrt(((e[a] - e[p]) ** 2).sum(1) + 1e-8)
    d_an = np.sqrt(((e[a] - e[n]) ** 2).sum(1) + 1e-8)
    margin = np.mean(np.maximum(d_ap - beta + alpha, 0) + np.maximum(beta - d_an + alpha, 0))
    bits = s.shape[1]
    push = -(pw / bits) * np.mean(((s - 0.5) ** 2).sum(1))
    balance = bw * np.mean((s.mean(1) - 0.5) ** 2)
    if variant == "fixed":
        quant = qw * np.mean(_np_logcosh(np.abs(s - _np_binarize(s))))
    else:
        rows = np.concatenate([e[a], e[p], e[n]])
        quant = qw * np.sum(_np_logcosh(np.abs(_np_binarize(rows) - rows)) ** 2)
    return {"margin": margin, "push": push, "balance": balance, "quantization": quant}


def _np_hard_negatives(s: np.ndarray, labels: np.ndarray, k: int) -> tuple:
    e = _np_unit(s)
    dist = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1))
    a, p, n = [], [], []
    for i in range(len(labels)):
        negs = np.flatnonzero(labels != labels[i])
        closest = negs[np.argmin(dist[i, negs])]
        for j in range(i // k * k, i // k * k + k):
            if j != i:
                a.append(i)
                p.append(j)
                n.append(closest)
    return np.array(a), np.array(p), np.array(n)


def _scores(classes: int, k: int, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(classes, 1, bits)) + 0.8 * rng.normal(size=(classes, k, bits))
    s = 1 / (1 + np.exp(-logits.reshape(classes * k, bits)))
    return s.astype(np.float32), np.repeat(np.arange(classes), k)


HYPER = {"alpha": 0.3, "beta": 0.6, "qw": 0.01, "pw": 0.001, "bw": 1.0}


def _hpsh(labels, scores, *, k, mode="hpsh", nzc=None, seed=None, parts=False, **weights):
    """hpsh_loss with a TripletSampler(k, mode, nonzero_loss_cutoff=nzc) and LossWeights."""
    sampler = TripletSampler(samples_per_class=k, mode=mode, nonzero_loss_cutoff=nzc)
    return hpsh_loss(
        labels,
        scores,
        sampler=sampler,
        weights=LossWeights(**weights),
        seed=seed,
        return_components=parts,
    )


# --------------------------------------------------------------------------------------------
# hpsh_loss terms
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["fixed", "original"])
def test_hpsh_loss_terms_with_hard_mining(variant: str) -> None:
    s, labels = _scores(5, 4, 32)
    total, parts = _hpsh(labels, s, k=4, mode="hard", variant=variant, parts=True)
    a, p, n = _np_hard_negatives(s, labels, 4)
    ref = _np_components(s, a, p, n, variant=variant, **HYPER)
    for key, value in ref.items():
        np.testing.assert_allclose(float(parts[key]), value, rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(float(total), sum(ref.values()), rtol=1e-5)
    # The loss half alone, on the same triplets, gives the same terms.
    weights = LossWeights(variant=variant)
    alone, alone_parts = hpsh_triplet_loss(s, (a, p, n), weights=weights, return_components=True)
    np.testing.assert_allclose(float(alone), float(total), rtol=1e-6)
    assert set(alone_parts) == set(parts)


@pytest.mark.parametrize(("variant", "mode"), [("fixed", "hpsh"), ("original", "original")])
def test_hpsh_loss_with_seeded_sampler(variant: str, mode: str) -> None:
    s, labels = _scores(6, 5, 16, seed=4)
    nzc = 1.4 if mode == "original" else 0.9
    hyper = {"alpha": 0.25, "beta": 0.7, "qw": 0.05, "pw": 0.3, "bw": 2.0}
    total, parts = _hpsh(
        labels,
        s,
        k=5,
        mode=mode,
        alpha=0.25,
        beta=0.7,
        quantization_weight=0.05,
        push_weight=0.3,
        balance_weight=2.0,
        variant=variant,
        seed=tf.constant([9, 1]),
        parts=True,
    )
    e = tf.constant(_np_unit(s), tf.float32)
    a, p, n = sample_triplets(
        e, labels, samples_per_class=5, mode=mode, nonzero_loss_cutoff=nzc, seed=[9, 1]
    )
    ref = _np_components(s, a.numpy(), p.numpy(), n.numpy(), variant=variant, **hyper)
    for key, value in ref.items():
        np.testing.assert_allclose(float(parts[key]), value, rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(float(total), sum(ref.values()), rtol=1e-5)


def test_hpsh_loss_accepts_any_sampler_callable() -> None:
    # A custom miner: each anchor's negative is the first row of the next class block.
    s, labels = _scores(3, 2, 8, seed=5)
    calls = []

    def next_block(e, y, seed):
        calls.append(seed)
        a = tf.constant([0, 1, 2, 3, 4, 5])
        p = tf.constant([1, 0, 3, 2, 5, 4])
        n = tf.constant([2, 2, 4, 4, 0, 0])
        return a, p, n

    got = hpsh_loss(labels, s, sampler=next_block, seed=[1, 2])
    a, p, n = [0, 1, 2, 3, 4, 5], [1, 0, 3, 2, 5, 4], [2, 2, 4, 4, 0, 0]
    ref = _np_components(s, a, p, n, variant="fixed", **HYPER)
    np.testing.assert_allclose(float(got), sum(ref.values()), rtol=1e-5)
    assert len(calls) == 1 and list(calls[0]) == [1, 2]


def test_margin_loss_hand_values() -> None:
    # d_ap = 0.5, d_an = 0.8 (up to the 1e-8): [0.5 - 0.6 + 0.3]_+ + [0.6 - 0.8 + 0.3]_+ = 0.3.
    a = np.array([[0.0, 0.0]], np.float32)
    p = np.array([[0.3, 0.4]], np.float32)
    n = np.array([[0.0, 0.8]], np.float32)
    np.testing.assert_allclose(float(margin_loss(a, p, n)), 0.3, rtol=1e-5)
    far = np.array([[3.0, 4.0]], np.float32)  # d_ap = 1e-4, d_an = 5: both hinges are 0
    assert float(margin_loss(a, a, far)) == 0.0
    near = np.array([[0.3, 0.4]], np.float32)  # d_an = 0.5: [0.6 - 0.5 + 0.3]_+ = 0.4
    np.testing.assert_allclose(float(margin_loss(a, a, near)), 0.4, rtol=1e-5)


def test_original_quantization_hand_derived() -> None:
    # All scores equal: e = 1/sqrt(16) = 0.25 everywhere, h(0.25) = 0, so each of the
    # 3 * T * K entries contributes log(cosh(0.25))^2; T = n * (k - 1) = 8 * 3 = 24.
    s = np.full((8, 16), 0.7, np.float32)
    labels = np.repeat([0, 1], 4)
    _, parts = _hpsh(labels, s, k=4, mode="random", variant="original", parts=True)
    expected = 0.01 * 3 * 24 * 16 * math.log(math.cosh(0.25)) ** 2
    np.testing.assert_allclose(float(parts["quantization"]), expected, rtol=1e-5)
    # Fixed variant on the same scores: b = 1, |s - b| = 0.3 everywhere.
    _, parts = _hpsh(labels, s, k=4, parts=True)
    np.testing.assert_allclose(
        float(parts["quantization"]), 0.01 * math.log(math.cosh(0.3)), rtol=1e-5
    )
    # Balance: (0.7 - 0.5)^2; push: -(0.001 / 16) * 16 * 0.04.
    np.testing.assert_allclose(float(parts["balance"]), 0.04, rtol=1e-5)
    np.testing.assert_allclose(float(parts["push"]), -0.001 * 0.04, rtol=1e-5)


def test_original_quantization_saturated_rows() -> None:
    # One dominant bit: e = (0.9, 0.3, 0.3, 0.3) / sqrt(1.08), so e_0 = 0.866 > 0.5 gets
    # h = 1 and the other entries (0.289) get h = 0.
    s = np.full((4, 4), 0.3, np.float32)
    s[:, 0] = 0.9
    labels = np.repeat([0, 1], 2)
    _, parts = _hpsh(
        labels, s, k=2, mode="hard", variant="original", quantization_weight=1.0, parts=True
    )
    e = np.array([0.9, 0.3, 0.3, 0.3]) / math.sqrt(1.08)
    per_row = _np_logcosh(1 - e[0]) ** 2 + 3 * _np_logcosh(e[1]) ** 2
    # T = 4 * 1 triplets, 3 rows each, all rows identical.
    np.testing.assert_allclose(float(parts["quantization"]), 3 * 4 * per_row, rtol=1e-4)


def test_fixed_quantization_zero_at_half_and_at_binary() -> None:
    labels = np.repeat([0, 1], 2)
    half = np.full((4, 8), 0.5, np.float32)  # b = 0.5 exactly
    _, parts = _hpsh(labels, half, k=2, parts=True)
    assert float(parts["quantization"]) == 0.0


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mixed_precision_inputs(dtype: str) -> None:
    s, labels = _scores(4, 3, 16, seed=2)
    low = tf.cast(s, dtype)
    got = _hpsh(labels, low, k=3, seed=[1, 2])
    ref = _hpsh(labels, tf.cast(low, tf.float32), k=3, seed=[1, 2])
    assert got.dtype == tf.float32
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    semi = triplet_semihard_loss(labels, low)
    assert semi.dtype == tf.float32
    np.testing.assert_allclose(
        float(semi), float(triplet_semihard_loss(labels, tf.cast(low, tf.float32))), rtol=1e-6
    )


@pytest.mark.parametrize(("variant", "mode"), [("fixed", "hpsh"), ("original", "original")])
def test_gradients_finite(variant: str, mode: str) -> None:
    s, labels = _scores(4, 3, 16, seed=6)
    s[0, :] = 0.5  # exact threshold entries
    x = tf.Variable(s)
    with tf.GradientTape() as tape:
        loss = _hpsh(labels, x, k=3, mode=mode, variant=variant)
    grad = tf.convert_to_tensor(tape.gradient(loss, x)).numpy()
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).sum() > 0


def test_hpsh_loss_under_jit() -> None:
    s, labels = _scores(4, 3, 16, seed=8)
    fn = tf.function(lambda y, x: _hpsh(y, x, k=3, mode="semihard"), jit_compile=True)
    got = fn(tf.constant(labels), tf.constant(s))
    ref = _hpsh(labels, s, k=3, mode="semihard")
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)


def test_hpsh_loss_validation() -> None:
    s, labels = _scores(2, 3, 8)
    with pytest.raises(ValueError, match="variant='both'"):
        LossWeights(variant="both")
    with pytest.raises(ValueError, match="alpha=nan"):
        LossWeights(alpha=float("nan"))
    with pytest.raises(TypeError, match=r"push_weight='0\.1'"):
        LossWeights(push_weight="0.1")
    with pytest.raises(ValueError, match="scores with shape"):
        _hpsh(labels, s[0], k=3)
    with pytest.raises(ValueError, match="scores with shape"):
        hpsh_triplet_loss(s[0], ([0], [1], [2]))
    with pytest.raises(ValueError, match="samples_per_class=1"):
        HPSHLoss(sampler={"samples_per_class": 1})
    with pytest.raises(TypeError, match="sampler='hpsh'"):
        HPSHLoss(sampler="hpsh")
    with pytest.raises(ValueError, match="distance_metric='cosine'"):
        triplet_hard_loss(labels, s, distance_metric="cosine")
    with pytest.raises(TypeError, match="soft="):
        TripletHardLoss(soft="yes")


def test_loss_weights_from_config_and_deprecated_variant() -> None:
    section = LossConfig(alpha=0.2, beta=0.5, push_weight=0.0, variant="original")
    weights = make_loss_weights(section)
    assert weights == LossWeights(alpha=0.2, beta=0.5, push_weight=0.0, variant="original")
    assert LossWeights.from_config(weights.get_config()) == weights
    hpsh_keys = {
        k: v for k, v in dataclasses.asdict(section).items() if k not in ("name", "options")
    }
    assert weights.get_config() == hpsh_keys  # the loss section's HPSH keys, key for key
    with pytest.warns(DeprecationWarning, match="variant='seed' is deprecated"):
        assert LossWeights(variant="seed").variant == "original"


# --------------------------------------------------------------------------------------------
# triplet losses: golden values of tensorflow-addons
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _golden_cases())
def test_triplet_losses_match_tfa_golden(case: dict) -> None:
    assert "missing" not in case, f"golden file missing: {case.get('missing')}"
    emb = np.array(case["embeddings"], np.float32)
    if case["loss"] == "TripletSemiHardLoss":
        fn_value = triplet_semihard_loss(
            case["labels"], emb, margin=case["margin"], distance_metric=case["distance_metric"]
        )
        wrapper = TripletSemiHardLoss(
            margin=case["margin"], distance_metric=case["distance_metric"]
        )
    else:
        kwargs = {
            "margin": case["margin"],
            "soft": case["soft"],
            "distance_metric": case["distance_metric"],
        }
        fn_value = triplet_hard_loss(case["labels"], emb, **kwargs)
        wrapper = TripletHardLoss(**kwargs)
    np.testing.assert_allclose(float(fn_value), case["value"], atol=1e-5)
    np.testing.assert_allclose(
        float(wrapper(np.array(case["labels"]), emb)), case["value"], atol=1e-5
    )


def test_golden_file_has_180_cases() -> None:
    assert len(_golden_cases()) == 180


def test_triplet_losses_without_positive_pairs() -> None:
    emb = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    labels = np.arange(4)
    # No positive pair: semi-hard is defined as 0; batch-hard uses D_ap = 0.
    assert float(triplet_semihard_loss(labels, emb)) == 0.0
    dist = np.sqrt(((emb[:, None] - emb[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    expected = np.mean(np.maximum(1.0 - dist.min(1), 0.0))
    np.testing.assert_allclose(float(triplet_hard_loss(labels, emb)), expected, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Keras wrappers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean", "none", None])
def test_hpsh_wrapper_equals_function(reduction: str | None) -> None:
    s, labels = _scores(4, 3, 16, seed=3)
    sampler = TripletSampler(samples_per_class=3)
    loss = HPSHLoss(sampler, seed=5, reduction=reduction, variant="original")
    ref = _hpsh(labels, s, k=3, seed=[5, 0], variant="original")
    np.testing.assert_allclose(float(loss(labels[:, None], s)), float(ref), rtol=1e-6)
    np.testing.assert_allclose(float(loss(labels, s)), float(ref), rtol=1e-6)
    # The sampler's config dict builds the same loss.
    from_dict = HPSHLoss(sampler.get_config(), seed=5, variant="original")
    np.testing.assert_allclose(float(from_dict(labels, s)), float(ref), rtol=1e-6)


def test_hpsh_loss_original_sampler_empty_rows_policies() -> None:
    # docs/method.md section 11.2: at 64 bits the original's mask empties rows of separated
    # codes. "index0"
    # (its GPU kernel) trains on with row 0 as the negative; "error" (its CPU kernel) fails.
    scores = tf.constant(separated_binary_codes(6, 5), tf.float32)
    labels = np.repeat(np.arange(6), 5)
    index0 = TripletSampler(samples_per_class=5, mode="original")
    error = TripletSampler(samples_per_class=5, mode="original", empty_rows="error")
    assert index0.nonzero_loss_cutoff == error.nonzero_loss_cutoff == 1.4
    loss = hpsh_loss(labels, scores, sampler=index0, seed=[1, 2])
    assert np.isfinite(float(loss))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no eligible negative"):
        hpsh_loss(labels, scores, sampler=error, seed=[1, 2])
    wrapped = HPSHLoss(error, seed=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no eligible negative"):
        tf.function(wrapped)(labels, scores)
    # Codes that leave every row a candidate pass the "error" check.
    s, y = _scores(6, 5, 32, seed=4)
    np.testing.assert_allclose(
        float(hpsh_loss(y, s, sampler=error, seed=[1, 2])),
        float(hpsh_loss(y, s, sampler=index0, seed=[1, 2])),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="empty_rows='nan'"):
        HPSHLoss({"samples_per_class": 5, "empty_rows": "nan"})


def _round_trip(obj: keras.losses.Loss) -> keras.losses.Loss:
    restored = type(obj).from_config(obj.get_config())
    assert restored.get_config() == obj.get_config()
    serial = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(serial) is type(obj)
    assert serial.get_config() == obj.get_config()
    return serial


def test_wrappers_config_round_trip() -> None:
    s, labels = _scores(4, 3, 16, seed=1)
    sampler = TripletSampler(samples_per_class=3, mode="original", empty_rows="error")
    objects = [
        HPSHLoss(sampler, alpha=0.2, beta=0.5, variant="original", seed=11, name="h"),
        TripletSemiHardLoss(margin=0.4, distance_metric="angular", name="sh"),
        TripletHardLoss(margin=0.3, soft=True, distance_metric="squared-L2", name="th"),
    ]
    for obj in objects:
        restored = _round_trip(obj)
        np.testing.assert_allclose(float(restored(labels, s)), float(obj(labels, s)), rtol=1e-6)
    config = objects[0].get_config()
    assert config["seed"] == 11 and config["name"] == "h"
    assert config["sampler"] == {
        "samples_per_class": 3,
        "mode": "original",
        "cutoff": 0.5,
        "nonzero_loss_cutoff": 1.4,
        "empty_rows": "error",
    }
    weights = LossWeights(alpha=0.2, beta=0.5, variant="original").get_config()
    assert {key: config[key] for key in weights} == weights
    assert json.loads(json.dumps(config)) == config  # plain JSON, as .keras files need


def test_model_with_compiled_loss_saves_and_reloads(tmp_path: Path) -> None:
    _, labels = _scores(4, 3, 8, seed=9)
    x = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="sigmoid")])
    sampler = TripletSampler(samples_per_class=3, mode="semihard")
    model.compile(optimizer="adam", loss=HPSHLoss(sampler, seed=2, alpha=0.25))
    history = model.fit(x, labels, batch_size=12, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    before = model.evaluate(x, labels, batch_size=12, verbose=0)
    path = tmp_path / "tiny.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.loss, HPSHLoss)
    assert reloaded.loss.get_config() == model.loss.get_config()
    assert reloaded.loss.sampler == sampler
    after = reloaded.evaluate(x, labels, batch_size=12, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-6)
    direct = _hpsh(labels, model(x), k=3, mode="semihard", seed=[2, 0], alpha=0.25)
    np.testing.assert_allclose(before, float(direct), rtol=1e-5)


# --------------------------------------------------------------------------------------------
# auxiliary classification term (loss.classification_weight)
# --------------------------------------------------------------------------------------------
def _np_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = np.asarray(logits, np.float64)
    z = z - z.max(1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-np.mean(log_softmax[np.arange(len(labels)), labels]))


def test_classification_loss_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    logits = (3 * rng.normal(size=(12, 5))).astype(np.float32)
    labels = rng.integers(0, 5, size=12)
    ref = _np_cross_entropy(logits, labels)
    np.testing.assert_allclose(float(classification_loss(labels, logits)), ref, rtol=1e-5)
    weighted = classification_loss(labels[:, None], tf.constant(logits, tf.float16), weight=0.3)
    np.testing.assert_allclose(
        float(weighted), 0.3 * _np_cross_entropy(logits.astype(np.float16), labels), rtol=1e-3
    )
    # Hand value: uniform logits over C classes give log(C) whatever the labels.
    uniform = classification_loss(labels, np.zeros((12, 5), np.float32), weight=2.0)
    np.testing.assert_allclose(float(uniform), 2.0 * math.log(5), rtol=1e-6)


def test_hpsh_loss_adds_classification_term() -> None:
    s, labels = _scores(5, 4, 16, seed=2)
    logits = np.random.default_rng(3).normal(size=(20, 5)).astype(np.float32)
    sampler = TripletSampler(samples_per_class=4, mode="hard")
    weights = LossWeights(classification_weight=0.5)
    total, parts = hpsh_loss(
        labels, s, sampler=sampler, weights=weights, logits=logits, return_components=True
    )
    base, base_parts = hpsh_loss(
        labels, s, sampler=sampler, weights=weights, return_components=True
    )
    assert "classification" not in base_parts
    ce = 0.5 * _np_cross_entropy(logits, labels)
    np.testing.assert_allclose(float(parts["classification"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(total), float(base) + ce, rtol=1e-5)
    for key, value in base_parts.items():
        np.testing.assert_allclose(float(parts[key]), float(value), rtol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="classification_weight=-1"):
        LossWeights(classification_weight=-1.0)
    assert make_loss_weights(LossConfig(classification_weight=0.25)).classification_weight == 0.25


def test_hpsh_wrapper_with_classifier_logits() -> None:
    s, labels = _scores(4, 3, 16, seed=5)
    logits = np.random.default_rng(6).normal(size=(12, 4)).astype(np.float32)
    sampler = TripletSampler(samples_per_class=3)
    loss = HPSHLoss(sampler, seed=4, classification_weight=0.2, num_classes=4)
    ref = hpsh_loss(
        labels,
        s,
        sampler=sampler,
        weights=LossWeights(classification_weight=0.2),
        seed=[4, 0],
        logits=logits,
    )
    value = loss(labels, np.concatenate([s, logits], axis=1))
    np.testing.assert_allclose(float(value), float(ref), rtol=1e-6)
    restored = _round_trip(loss)
    assert restored.num_classes == 4 and restored.weights.classification_weight == 0.2
    with pytest.raises(ValueError, match="num_classes=1"):
        HPSHLoss(sampler, num_classes=1)
    with pytest.raises(ValueError, match=r"classification_weight=-0\.1"):
        HPSHLoss(sampler, classification_weight=-0.1)
