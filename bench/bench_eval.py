"""Benchmark: a full AID-size retrieval evaluation with ``compute_report``.

4,000 query codes against the same 4,000 codes (32 bits, 30 classes, database = set minus the
query), every metric of the report. Synthetic clustered codes stand in for a trained model's.

Baseline: the seed code's approach (``eval2.py``): for each query a Python loop over the
database calling a per-pair Hamming function (``np.mean(a != b)``, what
``scipy.spatial.distance.hamming`` computes), a Python sort of (distance, index) tuples and a
Python AP loop. It runs on ``--naive-queries`` queries and is extrapolated linearly to all
queries (labelled as such). The seed also re-read three ``.npy`` files per query; that I/O is
NOT included, so the real seed was slower still.

    python bench/bench_eval.py
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

from hpsh_tf2.evaluation.report import compute_report
from hpsh_tf2.xla import prefer_wide_vectors

prefer_wide_vectors()  # as the CLI does; XLA reads XLA_FLAGS at its first compilation

RESULTS = Path(__file__).resolve().parent / "results" / "bench_eval.md"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-items", type=int, default=4000)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """Clustered codes in label order (like the seed's evaluation set)."""
    rng = np.random.default_rng(args.seed)
    labels = np.sort(rng.integers(0, args.classes, args.num_items))
    centers = rng.integers(0, 2, (args.classes, args.bits), dtype=np.uint8)
    noise = (rng.random((args.num_items, args.bits)) < 0.12).astype(np.uint8)
    return centers[labels] ^ noise, labels


def _naive_seed_eval(codes: np.ndarray, labels: np.ndarray, queries: int, k: int) -> float:
    """The seed's per-query Python evaluation (seed mAP), for the first ``queries`` queries."""
    scores = []
    for q in range(queries):
        pairs = []
        for j in range(codes.shape[0]):
            if j != q:
                pairs.append((float(np.mean(codes[q] != codes[j])), j))
        pairs.sort(key=lambda pair: pair[0])  # stable: ties keep database order
        top = [labels[j] for _, j in pairs[: k + 1]]
        hits, total = 0, 0.0
        for rank in range(1, k + 1):
            if top[rank] == top[0]:
                hits += 1
                total += hits / rank
        scores.append(total / hits if hits else 0.0)
    return float(np.mean(scores))


def _best(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up (imports, XLA compilation)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> str:
    args = _parse(argv)
    codes, labels = _data(args)
    common = {
        "query_codes": codes,
        "query_labels": labels,
        "db_codes": codes,
        "db_labels": labels,
        "k": args.k,
        "exclude_self": True,
    }
    full_s, (report, _) = _best(lambda: compute_report(**common), args.repeats)
    search_s, (searched, _) = _best(
        lambda: compute_report(**common, backend="tf", full_ranking_limit=0), args.repeats
    )
    start = time.perf_counter()
    naive_score = _naive_seed_eval(codes, labels, args.naive_queries, args.k)
    naive_s = (time.perf_counter() - start) * args.num_items / args.naive_queries
    subset = compute_report(
        **{
            **common,
            "query_codes": codes[: args.naive_queries],
            "query_labels": labels[: args.naive_queries],
        }
    )[0]
    same = abs(subset[f"seed_map@{args.k}"] - naive_score) < 1e-12
    rows = [
        ("compute_report, full ranking (default here)", full_s, "measured"),
        ("compute_report, tf search route", search_s, "measured"),
        (
            "seed-style per-query Python loop",
            naive_s,
            f"extrapolated from {args.naive_queries} queries",
        ),
    ]
    return _table(args, rows, report, searched, same, naive_s)


def _table(args, rows, report, searched, same, naive_s) -> str:
    lines = [
        "# AID-size evaluation benchmark",
        "",
        f"{args.num_items} queries vs {args.num_items} database codes (database minus the "
        f"query), {args.bits} bits, {args.classes} classes, k = {args.k}; best of "
        f"{args.repeats}; {os.cpu_count()} CPU cores ({platform.machine()}).",
        f"Load average when the table was written: {os.getloadavg()[0]:.2f} (the machine is "
        "shared; timings are noisy).",
        "",
        "| method | seconds (all queries) | speed-up vs naive | how |",
        "|---|---:|---:|---|",
    ]
    for name, seconds, how in rows:
        lines.append(f"| {name} | {seconds:.3f} | {naive_s / seconds:,.0f}x | {how} |")
    keys = [key for key, value in report.items() if isinstance(value, float)]
    lines += [
        "",
        "Metrics (both routes identical: "
        f"{'yes' if all(report[key] == searched[key] for key in keys) else 'NO'}; "
        f"seed metric equals the naive loop on its subset: {'yes' if same else 'NO'}):",
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [f"| {key} | {report[key]:.4f} |" for key in keys]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temp = args.output.with_suffix(".md.tmp")
    temp.write_text(text)
    os.replace(temp, args.output)
    print(text)
    return text


if __name__ == "__main__":
    main()
