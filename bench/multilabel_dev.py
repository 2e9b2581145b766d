"""Multi-label retrieval on the AID mosaics (``aid_multilabel_dev_effnet_lite0.npz``), issue 22.

Trains the package's hash head with the package's trainer
(:func:`hpsh_tf2.training.fit_hash_model`: label-balanced P x K batches, the HPSH loss, the
multi-label sampler) on the frozen EfficientNet-Lite0 features of the mosaics and reports
tie-aware mAP@20 / NDCG@20 / ACG@20 / WAP@20 (relevance: at least one shared label; graded
gain: the number of shared labels), next to the float-feature cosine kNN on the same queries.

Splits: :func:`hpsh_tf2.data.split.random_split_indices` (seeded, labels ignored).

* ``--phase val`` (recipe selection): train / val / test = 0.5 / 0.1 / 0.4; queries = val,
  database = train (the trainer's model selection protocol); the test part is never read.
* ``--phase test`` (the report): train / test = 0.6 / 0.4 (the dev protocol's 60/40 random
  split, split seeds 42/43/44); paper protocol: queries = test, database = test minus the query.

One JSON line per (variant, bits, split seed) is appended to ``--out``; ``--summary`` prints a
Markdown table of the means over seeds. Variants are ``--set`` overrides of ``aid.yaml``'s
recipe (``name=key=value,key=value``; repeatable ``--variant``).

Usage (from the repository root)::

    PYTHONPATH=. python bench/multilabel_dev.py --phase val --bits 32 --seeds 42 \
        --variant default= --out /tmp/ml_val.jsonl
    PYTHONPATH=. python bench/multilabel_dev.py --summary /tmp/ml_val.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np

from hpsh_tf2.config import load_config
from hpsh_tf2.data.split import random_split_indices
from hpsh_tf2.dataset import subset_inputs
from hpsh_tf2.encode import ScoreEncoder
from hpsh_tf2.evaluation import metrics, relevance
from hpsh_tf2.evaluation.report import compute_report
from hpsh_tf2.features import load_feature_file
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.ops.codes import np_binarize
from hpsh_tf2.training.fit import fit_hash_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FEATURES = REPO.parent / "shared" / "data" / "aid_multilabel_dev_effnet_lite0.npz"
KEYS = ("map@20", "ndcg@20", "acg@20", "wap@20", "map@20_min_k_r", "precision@20")


def _fractions(phase: str) -> dict[str, float]:
    if phase == "val":
        return {"train": 0.5, "val": 0.1, "test": 0.4}
    return {"train": 0.6, "val": 0.0, "test": 0.4}


def knn_reference(
    query: np.ndarray, query_labels, database: np.ndarray, db_labels, exclude_self: bool
):
    """Float-feature cosine kNN: mAP@20, NDCG@20, ACG@20, WAP@20 (ties by database index)."""

    def unit(x):
        x = x.astype(np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(query) @ unit(database).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :20]
    retrieved = db_labels[order]
    shared = relevance.shared(query_labels, db_labels)
    if exclude_self:
        np.fill_diagonal(shared, -1)
    levels = np.stack([np.bincount(row[row >= 0], minlength=31) for row in shared])
    common = {"query_labels": query_labels, "retrieved_labels": retrieved, "k": 20}
    return {
        "map@20": metrics.map_at_k(**common),
        "ndcg@20": metrics.ndcg_at_k(**common, level_counts=levels),
        "acg@20": metrics.acg_at_k(**common),
        "wap@20": metrics.wap_at_k(**common),
    }


def run_cell(args, name: str, overrides: list[str], bits: int, seed: int) -> dict:
    data = load_feature_file(args.features)
    fractions = _fractions(args.phase)
    parts = random_split_indices(data.paths, seed=seed, **fractions)
    inputs = {
        part: subset_inputs(data.labels[rows], features=data.features[rows])
        for part, rows in parts.items()
    }
    with tempfile.TemporaryDirectory(prefix="hpsh-ml-") as workdir:
        config = load_config(
            REPO / "aid.yaml",
            [
                "data.root=null",
                f"data.features={args.features}",
                f"model.bits={bits}",
                f"output.workdir={workdir}",
                "eval.figures=false",
                *overrides,
            ],
        )
        start = time.perf_counter()
        result = fit_hash_model(
            config,
            train_inputs=inputs["train"],
            val_inputs=inputs["val"] if args.phase == "val" and args.select else None,
            layout=RunLayout(workdir),
            verbose=0,
            class_names=data.class_names,
        )
        seconds = time.perf_counter() - start
        encoder = ScoreEncoder(
            keras.saving.load_model(result.hash_model_path),
            batch_size=256,
            image_size=config.model.image_size,
            backbone=config.model.backbone,
        )
        if args.phase == "val":
            query_part, db_part, exclude_self = "val", "train", False
        else:
            query_part, db_part, exclude_self = "test", "test", True
        query_codes = np_binarize(encoder(inputs[query_part]))
        db_codes = query_codes if exclude_self else np_binarize(encoder(inputs[db_part]))
        report, _ = compute_report(
            query_codes=query_codes,
            query_labels=inputs[query_part].labels,
            db_codes=db_codes,
            db_labels=inputs[db_part].labels,
            k=20,
            exclude_self=exclude_self,
        )
    knn = knn_reference(
        inputs[query_part].features,
        inputs[query_part].labels,
        inputs[db_part].features,
        inputs[db_part].labels,
        exclude_self,
    )
    row = {
        "variant": name,
        "overrides": overrides,
        "phase": args.phase,
        "bits": bits,
        "seed": seed,
        **{key: report[key] for key in KEYS},
        "selected_epoch": result.selected_epoch,
        "train_seconds": round(seconds, 1),
        **{f"knn_{key}": value for key, value in knn.items()},
    }
    return row


def summary(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["phase"], row["variant"], row["bits"]), []).append(row)
    lines = [
        "| phase | variant | bits | seeds | "
        + " | ".join(KEYS[:4])
        + " | kNN mAP@20 | kNN NDCG@20 |",
        "|---|---|---:|---|" + "---:|" * 6,
    ]
    for (phase, variant, bits), group in sorted(groups.items()):
        seeds = ",".join(str(r["seed"]) for r in group)
        values = [
            f"{np.mean([r[k] for r in group]):.4f} ± {np.std([r[k] for r in group]):.4f}"
            for k in (*KEYS[:4], "knn_map@20", "knn_ndcg@20")
        ]
        lines.append(f"| {phase} | `{variant}` | {bits} | {seeds} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=str(DEFAULT_FEATURES))
    parser.add_argument("--phase", choices=("val", "test"), default="val")
    parser.add_argument("--bits", default="32")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--variant", action="append", default=[], help="name=key=value,...")
    parser.add_argument("--select", action="store_true", help="val phase: early selection")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", type=Path)
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(args.summary))
        return 0
    for spec in args.variant or ["default="]:
        name, _, rest = spec.partition("=")
        overrides = [item for item in rest.split(",") if item]
        for seed in (int(s) for s in args.seeds.split(",")):
            for bits in (int(b) for b in args.bits.split(",")):
                row = run_cell(args, name, overrides, bits, seed)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as handle:
                        handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
