"""Bounded recipe search for HPSH codes on frozen features (issue 10, part 3).

How the default training recipe was found. Every variant trains the package's hash head
(:func:`hpsh_tf2.models.head.build_hash_model`) with the package's loss
(:func:`hpsh_tf2.losses.hpsh_loss`, any sampler mode) on class-balanced P x K batches
(:class:`hpsh_tf2.data.pipeline.ClassBalancedSampler`, :func:`train_dataset_from_arrays`) in a
small ``tf.function`` loop, and scores it with :func:`hpsh_tf2.evaluation.search.search` and
:func:`hpsh_tf2.evaluation.metrics.map_at_k` (mAP@20, "relevant retrieved" normaliser).

Protocol (``hpsh_tf2.data.split.make_split``, per class 0.5 / 0.1 / 0.4 by default):

* ``--phase val``: selection. Database = train, queries = val (as the trainer's
  ``RetrievalValidation``); the test part is never read. Early stopping, when a variant asks
  for it, also watches this validation mAP. The value is tie-aware (expected mAP@20 over the
  orders of equally distant items, ``hpsh_tf2.evaluation.ties``); rows written before that
  metric landed (no ``val_metric`` field) used index order.
* ``--phase test``: the final report only. Training and early stopping as above; then the test
  part is encoded and searched with the paper protocol (queries = test, database = test minus
  the query). Reported in index order (ties broken by database index, as ``search`` does), as
  the mean over ``--tie-perms`` random permutations of the test set (random tie order) and
  tie-aware, next to the float-feature cosine kNN on the same queries.

The final numbers of the README's "Retrieval quality" section come from ``cli.py table`` with
``aid.yaml`` (the package's own trainer), not from this script.

Variants are named recipes (``VARIANTS`` below); ``NAME+key=value+...`` composes a variant on
the command line (``lr1e3+dropout=0.5+schedule=cosine+steps=1500+patience=0``) and ``--set
key=value`` overrides a field of every variant. One JSON line per (variant, bits, sampler, split
seed) is appended to ``--out``.

Usage (from the repository root, with this checkout's package importable)::

    PYTHONPATH=. python bench/recipe_search.py --variants paper_2k_es,default --seeds 1,2,3
    PYTHONPATH=. python bench/recipe_search.py --variants default --bits 16,32,64 \
        --samplers hpsh,random,semihard --seeds 1,2,3 --phase test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf

from hpsh_tf2.data.pipeline import ClassBalancedSampler, train_dataset_from_arrays
from hpsh_tf2.data.split import make_split
from hpsh_tf2.evaluation.metrics import map_at_k
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.evaluation.ties import code_histograms, expected_map_at_k
from hpsh_tf2.losses import hpsh_loss
from hpsh_tf2.models.head import build_hash_model

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "aid_dev_effnet_lite0.npz"
K = 20

# The paper's AID trainer (aid.yaml as it was): Adam(1e-4, 0.5, 0.9), 30 x 5 batches, margin
# alpha 0.3 / beta 0.6, quantisation 0.01, push 0.001, balance 1, no early stopping.
PAPER = {
    "lr": 1e-4,
    "steps": 36000,
    "eval_every": 0,  # 0: evaluate only at the end (no early stopping)
    "patience": 0,
    "input_norm": "none",
    "cls_weight": 0.0,
    "quantization_weight": 0.01,
    "push_weight": 0.001,
    "balance_weight": 1.0,
    "alpha": 0.3,
    "beta": 0.6,
    "sampler": "hpsh",
    "cutoff": 0.5,
    "nonzero_loss_cutoff": 0.9,
    "dropout": 0.0,
    "classes_per_batch": 30,
    "samples_per_class": 5,
    "beta_1": 0.5,
    "beta_2": 0.9,
    "weight_decay": 0.0,
    "schedule": "constant",  # or cosine: decays lr to 0 over `steps`
}

VARIANTS: dict[str, dict] = {
    "paper": dict(PAPER),
    # the paper recipe, cut short: what a few hundred / thousand steps reach
    "paper_2k": {**PAPER, "steps": 2000, "eval_every": 200, "patience": 100},
    "paper_2k_es": {**PAPER, "steps": 2000, "eval_every": 100, "patience": 5},
    "lr1e3": {**PAPER, "lr": 1e-3, "steps": 2000, "eval_every": 100, "patience": 5},
    "lr3e4": {**PAPER, "lr": 3e-4, "steps": 2000, "eval_every": 100, "patience": 5},
    # the default recipe (aid.yaml / ucmd.yaml): 15 x 100 steps, cosine lr from 1e-3, input
    # dropout 0.5; eval_every only logs the validation curve here (no early stopping)
    "default": {
        **PAPER,
        "lr": 1e-3,
        "steps": 1500,
        "schedule": "cosine",
        "dropout": 0.5,
        "eval_every": 100,
        "patience": 0,
    },
}


def _variant(name: str, overrides: dict) -> dict:
    base = name
    extra: dict = {}
    # name+key=value+key=value composes quick variants on the command line
    if "+" in name:
        base, *pairs = name.split("+")
        for pair in pairs:
            key, value = pair.split("=", 1)
            extra[key] = value
    recipe = dict(VARIANTS[base])
    for key, value in {**extra, **overrides}.items():
        if key not in recipe:
            raise SystemExit(f"unknown recipe key {key!r}; known: {sorted(recipe)}")
        kind = type(PAPER[key])
        recipe[key] = kind(float(value)) if kind in (int, float) else kind(value)
    return recipe


def load_data(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Features float32, labels int32, paths, class names."""
    with np.load(path, allow_pickle=False) as npz:
        feats = npz["features"].astype(np.float32)
        labels = npz["labels"].astype(np.int32)
        paths = [str(p) for p in npz["paths"]]
        names = [str(c) for c in npz["class_names"]]
    return feats, labels, paths, names


def split_indices(
    paths: list[str], labels: np.ndarray, names: list[str], seed: int, fractions: tuple
) -> dict[str, np.ndarray]:
    """Row indices of the train / val / test parts of ``make_split``."""
    split = make_split(
        paths,
        labels,
        names,
        train=fractions[0],
        val=fractions[1],
        test=fractions[2],
        seed=seed,
    )
    where = {p: i for i, p in enumerate(paths)}
    return {
        name: np.array([where[p] for p in subset.paths], np.int64)
        for name, subset in split.subsets.items()
    }


def normalise(x: np.ndarray, train: np.ndarray, mode: str) -> np.ndarray:
    """Input normalisation: ``none``, ``l2`` (rows to unit length) or ``standardize``
    (train-set mean / std per feature)."""
    if mode == "none":
        return x
    if mode == "l2":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if mode == "standardize":
        mean, std = train.mean(axis=0), train.std(axis=0)
        return (x - mean) / np.maximum(std, 1e-6)
    raise SystemExit(f"unknown input_norm {mode!r}")


def hamming_map(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    *,
    exclude_self: bool,
) -> float:
    """mAP@20 of a Hamming search, ties by database index."""
    result = search(query_codes, db_codes, k=K, exclude_self=exclude_self)
    return map_at_k(query_labels=query_labels, retrieved_labels=db_labels[result.indices], k=K)


def tie_aware_map(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    *,
    exclude_self: bool,
) -> float:
    """Expected mAP@20 over every order of database items at equal Hamming distance."""
    relevant, total = code_histograms(
        query_codes=query_codes,
        query_labels=query_labels,
        db_codes=db_codes,
        db_labels=db_labels,
        exclude_self=exclude_self,
    )
    return expected_map_at_k(relevant_hist=relevant, total_hist=total, k=K)


def paper_protocol_map(codes: np.ndarray, labels: np.ndarray, perms: int, seed: int) -> dict:
    """Test vs test minus the query: index-order, random-tie-order mean and expected mAP."""
    index_order = hamming_map(codes, labels, codes, labels, exclude_self=True)
    expected = tie_aware_map(codes, labels, codes, labels, exclude_self=True)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(perms):
        order = rng.permutation(len(codes))
        values.append(
            hamming_map(codes[order], labels[order], codes[order], labels[order], exclude_self=True)
        )
    return {
        "index": index_order,
        "random_ties": float(np.mean(values)) if values else None,
        "expected": expected,
    }


def cosine_knn_map(
    query: np.ndarray, q_labels: np.ndarray, db: np.ndarray, db_labels: np.ndarray, same: bool
) -> float:
    """Float-feature cosine kNN mAP@20 (``same``: query i is database item i, excluded)."""
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    dn = db / np.linalg.norm(db, axis=1, keepdims=True)
    sim = qn @ dn.T
    if same:
        np.fill_diagonal(sim, -np.inf)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :K]
    return map_at_k(query_labels=q_labels, retrieved_labels=db_labels[top], k=K)


def train_one(
    recipe: dict,
    *,
    bits: int,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
) -> tuple[keras.Model, dict]:
    """Trains a head with ``recipe``; returns the (best on val, if early stopping) model."""
    keras.utils.set_random_seed(seed)
    dropout = float(recipe["dropout"])
    model = build_hash_model(x_train.shape[1], bits=bits, seed=123 + seed, input_dropout=dropout)
    num_classes = int(y_train.max()) + 1
    classifier = keras.layers.Dense(num_classes, name="classifier")
    classifier.build((None, bits))
    lr = recipe["lr"]
    if recipe["schedule"] == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=int(recipe["steps"]))
    elif recipe["schedule"] != "constant":
        raise SystemExit(f"unknown schedule {recipe['schedule']!r}")
    optimizer = keras.optimizers.Adam(
        lr, beta_1=recipe["beta_1"], beta_2=recipe["beta_2"], epsilon=1e-8
    )
    variables = model.trainable_variables + (
        classifier.trainable_variables if recipe["cls_weight"] > 0 else []
    )
    optimizer.build(variables)
    spc = recipe["samples_per_class"]
    loss_kwargs = dict(
        samples_per_class=spc,
        alpha=recipe["alpha"],
        beta=recipe["beta"],
        quantization_weight=recipe["quantization_weight"],
        push_weight=recipe["push_weight"],
        balance_weight=recipe["balance_weight"],
        sampler_mode=recipe["sampler"],
        cutoff=recipe["cutoff"],
        nonzero_loss_cutoff=recipe["nonzero_loss_cutoff"],
    )
    cls_weight = float(recipe["cls_weight"])
    wd = float(recipe["weight_decay"])

    @tf.function
    def step(x, y, step_seed):
        with tf.GradientTape() as tape:
            scores = model(x, training=True)
            loss = hpsh_loss(y, scores, seed=step_seed, **loss_kwargs)
            if cls_weight > 0:
                logits = classifier(scores)
                ce = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int64), logits)
                )
                loss = loss + cls_weight * ce
            if wd > 0:
                kernels = [v for v in model.trainable_variables if "kernel" in v.name]
                loss = loss + wd * tf.add_n([tf.reduce_sum(tf.square(v)) for v in kernels])
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    forward = tf.function(lambda x: model(x, training=False))

    def val_map() -> float | None:
        """Tie-aware mAP@20 of validation queries against the training set."""
        if len(y_val) == 0:  # no validation part: train for the full schedule
            return None
        db = (forward(x_train).numpy() > 0.5).astype(np.uint8)
        q = (forward(x_val).numpy() > 0.5).astype(np.uint8)
        return tie_aware_map(q, y_val, db, y_train, exclude_self=False)

    sampler = ClassBalancedSampler(
        y_train,
        classes_per_batch=recipe["classes_per_batch"],
        samples_per_class=spc,
        seed=seed,
    )
    data = iter(train_dataset_from_arrays(x_train, y_train, sampler))
    every, patience = int(recipe["eval_every"]), int(recipe["patience"])
    best, best_step, best_weights, history = -1.0, 0, None, []
    t0 = time.perf_counter()
    for i in range(1, int(recipe["steps"]) + 1):
        x, y = next(data)
        step(x, y, tf.constant([seed * 1000, i], tf.int64))
        if every and len(y_val) and i % every == 0:
            value = val_map()
            history.append((i, round(value, 4)))
            if value > best:
                best, best_step, best_weights = value, i, model.get_weights()
            elif patience and (i - best_step) >= patience * every:
                break
    train_s = time.perf_counter() - t0
    if best_weights is not None:
        model.set_weights(best_weights)
    else:
        best, best_step = val_map(), int(recipe["steps"])
    return model, {
        "val_map": best,
        "best_step": best_step,
        "steps_run": i,
        "train_s": train_s,
        "history": history,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="paper_2k_es")
    parser.add_argument("--bits", default="32")
    parser.add_argument("--samplers", default="", help="override the variants' sampler mode")
    parser.add_argument("--seeds", default="1,2,3", help="split seeds")
    parser.add_argument("--fractions", default="0.5,0.1,0.4")
    parser.add_argument("--phase", choices=("val", "test"), default="val")
    parser.add_argument("--tie-perms", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default="bench/results/recipe_search.jsonl")
    args = parser.parse_args(argv)

    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    feats, labels, paths, names = load_data(Path(args.data))
    fractions = tuple(float(v) for v in args.fractions.split(","))
    overrides = dict(item.split("=", 1) for item in args.set)
    samplers = [s for s in args.samplers.split(",") if s] or [None]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        parts = split_indices(paths, labels, names, seed, fractions)
        tr, va, te = parts["train"], parts["val"], parts["test"]
        knn_val = None
        if len(va):
            knn_val = cosine_knn_map(feats[va], labels[va], feats[tr], labels[tr], same=False)
        knn_test = None
        if args.phase == "test":
            knn_test = cosine_knn_map(feats[te], labels[te], feats[te], labels[te], same=True)
        for name in args.variants.split(","):
            for sampler in samplers:
                recipe = _variant(name, overrides)
                if sampler:
                    recipe["sampler"] = sampler
                x_all = normalise(feats, feats[tr], recipe["input_norm"])
                for bits in (int(b) for b in args.bits.split(",")):
                    t0 = time.perf_counter()
                    model, info = train_one(
                        recipe,
                        bits=bits,
                        x_train=x_all[tr],
                        y_train=labels[tr],
                        x_val=x_all[va],
                        y_val=labels[va],
                        seed=seed,
                    )
                    row = {
                        "variant": name,
                        "sampler": recipe["sampler"],
                        "bits": bits,
                        "split_seed": seed,
                        "phase": args.phase,
                        "val_metric": "expected",
                        "knn_val": None if knn_val is None else round(knn_val, 4),
                        **{k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()},
                    }
                    if args.phase == "test":
                        codes = (model.predict(x_all[te], verbose=0) > 0.5).astype(np.uint8)
                        test = paper_protocol_map(codes, labels[te], args.tie_perms, seed)
                        row.update(
                            test_index=round(test["index"], 4),
                            test_random_ties=round(test["random_ties"], 4),
                            test_expected=round(test["expected"], 4),
                            knn_test=round(knn_test, 4),
                        )
                    row["cell_s"] = round(time.perf_counter() - t0, 1)
                    row["recipe"] = recipe
                    print(json.dumps({k: v for k, v in row.items() if k != "recipe"}), flush=True)
                    with out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
