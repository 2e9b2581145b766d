"""Tests of hpsh_tf2.ops.distances against NumPy references and hand-derived values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.ops.distances import (
    angular_distances,
    l2_normalize_embeddings,
    original_pseudo_distances,
    pairwise_distances,
)


def _np_euclidean(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))


def _np_unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def points() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32)


def test_pairwise_distances_match_numpy(points: np.ndarray) -> None:
    got = pairwise_distances(points).numpy()
    np.testing.assert_allclose(got, _np_euclidean(points), atol=2e-5)
    assert np.all(np.diag(got) == 0.0)


def test_squared_distances_match_numpy(points: np.ndarray) -> None:
    got = pairwise_distances(points, squared=True).numpy()
    np.testing.assert_allclose(got, _np_euclidean(points) ** 2, atol=1e-4)
    assert np.all(np.diag(got) == 0.0)
    assert np.all(got >= 0.0)


def test_pairwise_distances_gradient_finite_on_duplicates(points: np.ndarray) -> None:
    x = tf.Variable(np.concatenate([points, points[:2]], axis=0))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(pairwise_distances(x))
    grad = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(grad))
    # d/dx_i of sum_{j != i} 2 ||x_i - x_j|| summed over distinct neighbours only.
    xs = x.numpy().astype(np.float64)
    diff = xs[:, None, :] - xs[None, :, :]
    norm = np.linalg.norm(diff, axis=-1, keepdims=True)
    expected = 2.0 * np.where(norm > 1e-6, diff / np.where(norm > 0, norm, 1.0), 0.0).sum(1)
    np.testing.assert_allclose(grad, expected, atol=1e-4)


def test_pairwise_distances_rejects_bad_arguments(points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="eps"):
        pairwise_distances(points, eps=-1.0)
    with pytest.raises(ValueError, match="rank-2"):
        pairwise_distances(points[0])


def test_angular_distances_match_numpy(points: np.ndarray) -> None:
    unit = _np_unit(points)
    expected = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(angular_distances(points).numpy(), expected, atol=1e-6)


def test_l2_normalize_embeddings_matches_formula() -> None:
    s = np.array([[0.3, 0.4], [0.0, 0.0], [1e-6, 0.0]], np.float32)
    got = l2_normalize_embeddings(s).numpy()
    sq = (s.astype(np.float64) ** 2).sum(1, keepdims=True)
    expected = s / np.sqrt(np.maximum(sq, 1e-10))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[0], [0.6, 0.8], rtol=1e-6)
    with pytest.raises(ValueError, match="eps_sq"):
        l2_normalize_embeddings(s, eps_sq=0.0)


def test_original_pseudo_distances_match_loop_reference() -> None:
    e = _np_unit(np.random.default_rng(1).uniform(size=(6, 8)))
    q = e**2
    expected = np.empty((6, 6))
    for i in range(6):
        for j in range(6):
            expected[i, j] = np.sqrt(q[i].sum() + q[j].sum() - 2 * q[i] @ q[j] + (i == j))
    got = original_pseudo_distances(e.astype(np.float32)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_original_pseudo_distances_uniform_codes(bits: int) -> None:
    # docs/method.md section 4.2: uniform unit rows give sqrt(2 - 2/K) off the diagonal,
    # sqrt(3 - 2/K) on it.
    e = np.full((3, bits), 1.0 / np.sqrt(bits), np.float32)
    got = original_pseudo_distances(e).numpy()
    off = np.sqrt(2.0 - 2.0 / bits)
    on = np.sqrt(3.0 - 2.0 / bits)
    np.testing.assert_allclose(got, np.where(np.eye(3, dtype=bool), on, off), rtol=1e-6)


def test_distances_under_jit(points: np.ndarray) -> None:
    fn = tf.function(
        lambda x: (pairwise_distances(x), angular_distances(x), original_pseudo_distances(x)),
        jit_compile=True,
    )
    d, a, s = fn(tf.constant(points))
    np.testing.assert_allclose(d.numpy(), pairwise_distances(points).numpy(), atol=1e-5)
    np.testing.assert_allclose(a.numpy(), angular_distances(points).numpy(), atol=1e-6)
    np.testing.assert_allclose(s.numpy(), original_pseudo_distances(points).numpy(), atol=1e-5)
