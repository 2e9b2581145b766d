"""Benchmark: how well each label keeps its share, iterative stratification against a random split.

On the real multi-hot labels of the AID multi-label dev mosaics
(``aid_multilabel_dev_effnet_lite0.npz``: 1,212 mosaics, 30 labels, 1-3 labels each) and on a
BigEarthNet-size synthetic set (590,326 items, 43 Zipf-distributed labels, about 3 per item),
split train/val/test with :func:`hpsh_tf2.data.stratify.iterative_stratification` (Sechidis et
al. 2011) and, as the baseline in the same run, a seeded random permutation cut at the same
fractions. Reported per method, mean over seeds:

- label deviation: ``|share of label i's items in subset j - r_j|``, mean and max over labels
  and subsets (the paper's LD measure is this, averaged);
- labels missing from a subset: label-subset pairs with no item although ``r_j > 0``;
- CPU seconds per split (process time: the machine is shared).

    python bench/bench_stratify.py [--npz ../shared/data/aid_multilabel_dev_effnet_lite0.npz]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from hpsh_tf2.data.stratify import iterative_stratification

RESULTS = Path(__file__).resolve().parent / "results" / "stratify.md"
DEFAULT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_NPZ = DEFAULT_NPZ / "aid_multilabel_dev_effnet_lite0.npz"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.6, 0.1, 0.3))
    parser.add_argument("--seeds", type=int, nargs="+", default=(42, 43, 44))
    parser.add_argument("--synthetic-items", type=int, default=590_326)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _random_split(n: int, fractions, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.rint(np.cumsum(fractions)[:-1] * n).astype(int)
    out = np.empty(n, np.int64)
    for j, part in enumerate(np.split(order, cuts)):
        out[part] = j
    return out


def _measure(hot: np.ndarray, assignment: np.ndarray, fractions) -> tuple[float, float, int]:
    per_label = hot.sum(axis=0)
    active = [j for j, r in enumerate(fractions) if r > 0]
    shares = np.stack([hot[assignment == j].sum(axis=0) / per_label for j in active])
    deviation = np.abs(shares - np.asarray(fractions)[active][:, None])
    return float(deviation.mean()), float(deviation.max()), int(np.sum(shares == 0))


def _synthetic(n: int, classes: int = 43, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rate = 1.0 / np.arange(1, classes + 1)
    rate = rate / rate.sum() * 3.0
    hot = (rng.random((n, classes)) < rate).astype(np.uint8)
    hot[hot.sum(axis=1) == 0, 0] = 1
    return hot


def _rows(name: str, hot: np.ndarray, fractions, seeds) -> list[str]:
    results = {"random (baseline)": [], "iterative stratification": []}
    for seed in seeds:
        start = time.process_time()
        rand = _random_split(len(hot), fractions, seed)
        rand_s = time.process_time() - start
        start = time.process_time()
        strat = iterative_stratification(hot, fractions, seed=seed)
        strat_s = time.process_time() - start
        results["random (baseline)"].append((*_measure(hot, rand, fractions), rand_s))
        results["iterative stratification"].append((*_measure(hot, strat, fractions), strat_s))
    base = np.mean([r[0] for r in results["random (baseline)"]])
    rows = []
    for method, values in results.items():
        mean_dev, max_dev, missing, seconds = (np.mean([v[i] for v in values]) for i in range(4))
        rows.append(
            f"| {name} | {method} | {mean_dev:.4f} | {mean_dev / base:.3f} | {max_dev:.4f} "
            f"| {missing:.1f} | {seconds:.3f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    fractions = tuple(args.fractions)
    rows = []
    if args.npz.is_file():
        with np.load(args.npz) as data:
            hot = np.asarray(data["labels"], np.uint8)
        rows += _rows(
            f"AID multi-label dev ({len(hot)} x {hot.shape[1]})", hot, fractions, args.seeds
        )
    else:
        print(f"skipping the dev mosaics: {args.npz} not found")
    hot = _synthetic(args.synthetic_items)
    rows += _rows(
        f"synthetic BigEarthNet-size ({len(hot)} x {hot.shape[1]})", hot, fractions, args.seeds
    )
    table = [
        "# Label shares: iterative stratification vs a random split",
        "",
        f"Fractions train/val/test = {fractions}, seeds {list(args.seeds)} (mean over seeds); "
        f"{platform.machine()}, numpy {np.__version__}. "
        "Reproduce: `python bench/bench_stratify.py`.",
        "",
        "| data | method | mean label deviation | ratio to random | max label deviation "
        "| label-subset pairs without items | CPU seconds |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
