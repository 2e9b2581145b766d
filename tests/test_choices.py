"""Config choices come from the registries and are written nowhere else.

Two checks over the package source (``ast``, outside ``registry.py``):

* no tuple, list, set or dict-key literal equal to a registry's built-in names (the old
  ``SAMPLER_MODES = (...)``, ``Literal["tf", "numpy", "faiss"]``, ``{"tf": run_tf, ...}``);
* no string dispatch on a registered name: a comparison (``==``, ``!=``, ``in``, ``not in``)
  of a registered name with an expression ending in the registry key's leaf
  (``mode == "hard"``, ``config.train.strategy != "multi_worker"``,
  ``mode in ("hard", "semihard")``).

Plus: a sampler and a search backend registered by a test become valid config values, and are
what the code then runs.
"""

from __future__ import annotations

import ast

import numpy as np
import pytest
import tensorflow as tf

from hpsh_tf2.config import Config, ConfigError, apply_overrides
from hpsh_tf2.ops.sampling import NegativeRule, TripletBatch
from hpsh_tf2.registry import REGISTRIES, SAMPLERS, SEARCH_BACKENDS, Registry
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "hpsh_tf2"
COMPARISONS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _strings(node: ast.AST) -> list[str] | None:
    """The string constants of a tuple/list/set literal (None if any element is not one)."""
    if not isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return None
    values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
    if len(values) != len(node.elts) or not all(isinstance(v, str) for v in values):
        return None
    return values


def _leaf(node: ast.AST) -> str | None:
    """``mode`` of ``mode``, ``self.mode`` or ``config.sampler.mode``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _constants(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    return set(_strings(node) or ())


def spelled_choices(source: str, registries: dict[str, Registry]) -> list[str]:
    """Where ``source`` writes a registry's name list or dispatches on a registered name."""
    found = []
    tree = ast.parse(source)
    lists = {key: set(reg.names()) for key, reg in registries.items() if len(reg) >= 2}
    for node in ast.walk(tree):
        literal = _strings(node)
        if isinstance(node, ast.Dict) and node.keys and all(k is not None for k in node.keys):
            literal = _strings(ast.Tuple(elts=list(node.keys)))
        if literal is not None:
            for key, names in lists.items():
                if set(literal) == names:
                    found.append(f"line {node.lineno}: the {key} names {sorted(names)}")
        if isinstance(node, ast.Compare) and all(isinstance(op, COMPARISONS) for op in node.ops):
            sides = [node.left, *node.comparators]
            for key, reg in registries.items():
                leaf = key.rsplit(".", 1)[-1]
                if not any(_leaf(side) == leaf for side in sides):
                    continue
                hits = set().union(*(_constants(side) for side in sides)) & set(reg.names())
                if hits:
                    found.append(f"line {node.lineno}: {key} compared with {sorted(hits)}")
    return found


def test_no_choice_is_spelled_outside_the_registry():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "registry.py" and path.parent == PACKAGE:
            continue
        for where in spelled_choices(path.read_text(), REGISTRIES):
            offenders.append(f"{path.relative_to(REPO_ROOT)} {where}")
    assert not offenders, "\n".join(offenders)


def test_the_check_catches_each_kind_of_spelling():
    reg = Registry("sampler", "sampler.mode")
    for name in ("hpsh", "hard", "semihard"):
        reg.register(name, int)
    registries = {"sampler.mode": reg}
    bad = {
        "MODES = ('hpsh', 'hard', 'semihard')": "names",
        "x: Literal['hard', 'hpsh', 'semihard'] = 'hpsh'": "names",
        "RUN = {'hpsh': f, 'hard': g, 'semihard': h}": "names",
        "if mode == 'hard': pass": "compared",
        "if config.sampler.mode != 'hpsh': pass": "compared",
        "if self.mode in ('hard', 'semihard'): pass": "compared",
    }
    for source, kind in bad.items():
        found = spelled_choices(source, registries)
        assert len(found) == 1 and kind in found[0], (source, found)
    fine = (
        "DEFAULT = ('hpsh', 'semihard')",  # a subset (e.g. the table's default samplers)
        "if init == 'hard': pass",  # another key
        "mode = 'hpsh'",  # a default value
        "if mode == other: pass",
    )
    for source in fine:
        assert spelled_choices(source, registries) == [], source


def test_the_registries_serve_every_choice_key():
    assert all(len(REGISTRIES[key]) >= 2 for key in REGISTRIES if key != "loss.name")


# ------------------------------------------------------------------ registered from outside


def _first_other_class(batch: TripletBatch) -> tf.Tensor:
    """Toy rule: the first row of another class (the lowest index with a different label)."""
    different = tf.not_equal(batch.labels[:, None], batch.labels[None, :])
    first = tf.argmax(tf.cast(different, tf.int32), axis=1, output_type=tf.int32)
    return tf.gather(first, batch.anchors)


def test_a_registered_sampler_becomes_a_valid_config_value():
    from hpsh_tf2.samplers import make_sampler

    with pytest.raises(ConfigError, match=r"sampler\.mode.*'toy_first'; expected one of 'hpsh'"):
        apply_overrides(Config(), ["sampler.mode=toy_first"])
    with SAMPLERS.scoped("toy_first", NegativeRule(_first_other_class)):
        config = apply_overrides(Config(), ["sampler.mode=toy_first"])
        with pytest.raises(ConfigError, match="'toy_first'"):
            apply_overrides(Config(), ["sampler.mode=toy_nope"])
        sampler = make_sampler(config.sampler, samples_per_class=3, default_cutoff=0.9)
        labels = np.repeat([4, 7, 9], 3)
        e = tf.math.l2_normalize(tf.random.stateless_normal([9, 8], seed=[1, 2]), axis=1)
        anchors, _, negatives = sampler(e, labels, tf.constant([0, 0]))
    expected = np.where(labels[anchors.numpy()] == 4, 3, 0)  # first row of another class
    np.testing.assert_array_equal(negatives.numpy(), expected)
    assert "toy_first" not in SAMPLERS
    with pytest.raises(ConfigError, match="toy_first"):
        apply_overrides(Config(), ["sampler.mode=toy_first"])


def _brute_force(query, db, k, exclude_self, chunk_size):
    """Toy backend: all distances with np.unpackbits, ranked by (distance, index)."""
    del chunk_size
    bits_q, bits_db = np.unpackbits(query, axis=1), np.unpackbits(db, axis=1)
    dist = (bits_q[:, None, :] != bits_db[None, :, :]).sum(axis=-1)
    if exclude_self:
        dist[np.arange(len(query)), np.arange(len(query))] = bits_db.shape[1] + 1
    order = np.lexsort((np.broadcast_to(np.arange(len(db)), dist.shape), dist), axis=1)[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


def test_a_registered_search_backend_becomes_a_valid_config_value():
    from hpsh_tf2.evaluation.search import search

    rng = np.random.default_rng(3)
    db = rng.integers(0, 2, size=(40, 16))
    with pytest.raises(ConfigError, match=r"eval\.backend"):
        apply_overrides(Config(), ["eval.backend=toy_brute"])
    with SEARCH_BACKENDS.scoped("toy_brute", _brute_force):
        assert apply_overrides(Config(), ["eval.backend=toy_brute"]).eval.backend == "toy_brute"
        got = search(db[:7], db, k=5, exclude_self=True, backend="toy_brute")
    ref = search(db[:7], db, k=5, exclude_self=True, backend="numpy")
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.distances, ref.distances)
    with pytest.raises(ValueError, match="backend='toy_brute'"):
        search(db[:7], db, k=5, backend="toy_brute")


def test_registered_names_are_listed_in_the_config_error():
    with SEARCH_BACKENDS.scoped("toy_listed", _brute_force):
        with pytest.raises(ConfigError) as info:
            apply_overrides(Config(), ["eval.backend=nope"])
    assert "'toy_listed'" in str(info.value) and "'numpy'" in str(info.value)
