"""Benchmark: exact Hamming top-k, TF op vs NumPy vs FAISS IndexBinaryFlat.

Default problem: 1,000 queries against 1,000,000 random 64-bit codes, k = 20. All backends
run in the same process on the same data; each is timed ``--repeats`` times (interleaved) and
the best time is kept. The NumPy backend (and TF without XLA) are slow, so they run on the
first ``--slow-queries`` queries and their rate is reported per query (clearly marked).
Results are checked against each other.

    python bench/bench_search.py                   # full size
    python bench/bench_search.py --num-db 100000   # smaller

FAISS is optional (``pip install faiss-cpu``); without it that row says "not installed".
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from hpsh_tf2.evaluation.search import search
from hpsh_tf2.ops.hamming import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_GROUP_SIZE,
    hamming_topk,
)

RESULTS = Path(__file__).resolve().parent / "results" / "bench_search.md"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-db", type=int, default=1_000_000)
    parser.add_argument("--num-queries", type=int, default=1_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-queries", type=int, default=50)
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--query-chunk-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def _best_of(runs: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]], repeats: int):
    """Times each callable ``repeats`` times, interleaved; returns best seconds and results."""
    best = {name: float("inf") for name in runs}
    outputs = {}
    for name, run in runs.items():
        outputs[name] = run()  # warm-up (XLA compilation, FAISS index build excluded)
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def _faiss_runner(db: np.ndarray, query: np.ndarray, k: int):
    try:
        faiss = importlib.import_module("faiss")
    except ImportError:
        return None
    index = faiss.IndexBinaryFlat(db.shape[1] * 8)
    index.add(db)

    def run():
        distances, indices = index.search(query, k)
        return indices, distances

    return run


def main(argv: list[str] | None = None) -> str:
    args = _parse(argv)
    rng = np.random.default_rng(args.seed)
    db = rng.integers(0, 256, (args.num_db, args.bits // 8), dtype=np.uint8)
    query = rng.integers(0, 256, (args.num_queries, args.bits // 8), dtype=np.uint8)
    slow = query[: args.slow_queries]
    db_tensor, query_tensor, slow_tensor = tf.constant(db), tf.constant(query), tf.constant(slow)
    options = {
        "k": args.k,
        "group_size": args.group_size,
        "chunk_size": args.chunk_size,
        "query_chunk_size": args.query_chunk_size,
    }

    def tf_run(queries, jit):
        def run():
            indices, distances = hamming_topk(queries, db_tensor, jit_compile=jit, **options)
            return indices.numpy(), distances.numpy()

        return run

    def numpy_run():
        result = search(slow, db, k=args.k, backend="numpy", packed=True)
        return result.indices, result.distances

    runs = {
        "tf (XLA group-min + top_k)": tf_run(query_tensor, True),
        "tf, no XLA": tf_run(slow_tensor, False),
        "numpy": numpy_run,
    }
    faiss_run = _faiss_runner(db, query, args.k)
    if faiss_run is not None:
        runs["faiss IndexBinaryFlat"] = faiss_run
    counts = {name: args.num_queries for name in runs}
    counts["tf, no XLA"] = counts["numpy"] = slow.shape[0]
    best, outputs = _best_of(runs, args.repeats)
    reference = outputs["tf (XLA group-min + top_k)"]
    agree = {
        name: bool(
            np.array_equal(out[1], reference[1][: len(out[1])])
            and np.array_equal(out[0], reference[0][: len(out[0])])
        )
        for name, out in outputs.items()
    }
    return _table(args, best, counts, agree, faiss_run is not None)


def _table(args, best, counts, agree, has_faiss) -> str:
    rates = {name: counts[name] / best[name] for name in best}
    base_name = "faiss IndexBinaryFlat" if has_faiss else "numpy"
    lines = [
        "# Hamming top-k search benchmark",
        "",
        f"{args.num_queries} queries x {args.num_db:,} database codes, {args.bits} bits, "
        f"k = {args.k}; best of {args.repeats}; {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), TF {tf.__version__}, "
        f"group_size {args.group_size}, chunk_size {args.chunk_size}.",
        f"Load average when the table was written: {os.getloadavg()[0]:.2f} (the machine is "
        "shared; timings are noisy).",
        f"Rows marked * ran on the first {args.slow_queries} queries only (rate per query).",
        "",
        f"| backend | queries | seconds | queries/s | speed vs {base_name} | same result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in best:
        star = "*" if counts[name] != args.num_queries else ""
        lines.append(
            f"| {name}{star} | {counts[name]} | {best[name]:.3f} | {rates[name]:,.0f} | "
            f"{rates[name] / rates[base_name]:.2f}x | {'yes' if agree[name] else 'NO'} |"
        )
    if not has_faiss:
        lines.append("| faiss IndexBinaryFlat | - | - | - | - | not installed |")
    lines += [
        "",
        "'same result' compares indices and distances with the TF op (ties by lower index).",
    ]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temp = args.output.with_suffix(".md.tmp")
    temp.write_text(text)
    os.replace(temp, args.output)
    print(text)
    return text


if __name__ == "__main__":
    main()
