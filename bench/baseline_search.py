"""Hyper-parameter search of the baseline losses on the VALIDATION split (issue 20, part 3).

How the presets of the baselines (``preset`` in each ``hpsh_tf2/losses/<method>.py``) were
chosen. Every method gets the same budget: its main hyper-parameter at three values (the
paper's value and one step either side, ``GRID`` below), one split seed, 32 bits, the shared
training recipe of ``aid.yaml`` (15 x 100 steps, cosine lr from 1e-3, input dropout 0.5). The
split is 0.5 / 0.1 / 0.4 per class (train / val / test); the trainer's model selection scores
every epoch on the validation queries against the training set (tie-aware mAP@20,
``RetrievalValidation``) and the best epoch's value is the trial's score. The test part is
never encoded or searched here. The chosen value is the one with the best validation mAP (the
paper's value on a tie within 0.002).

Writes one JSON line per trial to ``--out`` (a rerun skips finished trials) and the summary
table to ``--table``.

Usage (from the repository root, with this checkout's package importable)::

    PYTHONPATH=. python bench/baseline_search.py \\
        --features ../shared/data/aid_dev_effnet_lite0.npz --workdir runs/baseline_search
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hpsh_tf2.config import load_config
from hpsh_tf2.workflow import train

REPO = Path(__file__).resolve().parents[1]

# method -> (option, values tried; the paper's value first)
GRID: dict[str, tuple[str, tuple[float, ...]]] = {
    "dpsh": ("eta", (0.1, 0.01, 1.0)),
    "dsh": ("alpha", (0.01, 0.001, 0.1)),
    "hashnet": ("alpha", (0.1, 0.03, 0.3)),
    "dch": ("gamma", (20.0, 5.0, 80.0)),
    "csq": ("quantization_weight", (1e-4, 1e-2, 1.0)),
    "greedyhash": ("alpha", (0.1, 0.01, 1.0)),
}
TIE = 0.002


def _trial_overrides(features: str, workdir: Path, method: str, option: str, value: float):
    return [
        "data.root=null",
        f"data.features={features}",
        "data.split.train=0.5",
        "data.split.val=0.1",
        "data.split.test=0.4",
        "data.seed=42",
        "model.bits=32",
        f"loss.name={method}",
        f"loss.options.{option}={value}",
        f"output.workdir={workdir / f'{method}-{option}={value}'}",
    ]


def _run(args) -> list[dict]:
    out = Path(args.out)
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done[(row["method"], row["value"])] = row
    rows = []
    for method, (option, values) in GRID.items():
        if args.methods and method not in args.methods:
            continue
        for value in values:
            if (method, value) in done:
                rows.append(done[(method, value)])
                continue
            overrides = _trial_overrides(args.features, Path(args.workdir), method, option, value)
            config = load_config(REPO / "aid.yaml", overrides)
            start = time.perf_counter()
            result = train(config, verbose=0)
            row = {
                "method": method,
                "option": option,
                "value": value,
                "val_map@20": result.best_val_map,
                "selected_epoch": result.selected_epoch,
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(json.dumps(row), flush=True)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def _summary(rows: list[dict]) -> str:
    lines = [
        "| method | option | values tried (val mAP@20, tie-aware) | chosen |",
        "|---|---|---|---|",
    ]
    for method, (option, values) in GRID.items():
        trials = {r["value"]: r["val_map@20"] for r in rows if r["method"] == method}
        if not trials:
            continue
        best = max(trials.values())
        paper = values[0]
        chosen = paper if trials.get(paper, -1) >= best - TIE else max(trials, key=trials.get)
        tried = ", ".join(f"{v:g}: {trials[v]:.4f}" for v in values if v in trials)
        lines.append(f"| {method} | {option} | {tried} | {chosen:g} |")
    runs = len(rows)
    return "\n".join(lines) + f"\n\n{runs} runs (3 per method, 1 split seed, 32 bits).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="the dev .npz of features")
    parser.add_argument("--workdir", default="runs/baseline_search")
    parser.add_argument("--out", default="bench/results/baseline_search.jsonl")
    parser.add_argument("--table", default="bench/results/baseline_search.md")
    parser.add_argument("--methods", type=lambda s: s.split(","), default=None)
    args = parser.parse_args()
    rows = _run(args)
    text = _summary(rows)
    Path(args.table).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
