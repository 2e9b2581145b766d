"""Benchmark: exact Hamming top-k at every code length, TF op vs FAISS vs NumPy.

Default problem: 1,000 queries against 1,000,000 random codes, k = 20, at 16, 24, 32, 48, 64,
128 and 256 bits. For each length all backends run in the same process on the same data; each
is timed ``--repeats`` times, interleaved, and the best time is kept (TF is warmed up first so
XLA compilation is excluded; the FAISS index build is excluded). Backends:

* ``tf (XLA)``: :func:`hpsh_tf2.ops.hamming.hamming_topk` as the evaluator runs it.
* ``tf, no XLA``: the same op with ``jit_compile=False``, as the SavedModel's ``retrieve``
  signature runs it; timed on the first ``--nojit-queries`` queries (rate per query).
* ``faiss``: ``faiss.IndexBinaryFlat`` (optional; ``pip install faiss-cpu``), timed with its
  default OpenMP threads and with one thread; the faster counts (on a loaded machine FAISS's
  spin-waiting threads lose much more than TF's thread pool, which would flatter TF).
* ``numpy``: the NumPy backend of :func:`hpsh_tf2.evaluation.search.search`; timed on the first
  ``--numpy-queries`` queries (rate per query).
* ``1 request``: one query, ``k = --request-k``, no XLA, against the whole database: what a
  ``retrieve`` request of one image pays for the search (compare with the forward pass in
  ``bench/results/serving.md``).

"same result" compares every backend's indices and distances with the XLA op's (FAISS rows
re-sorted by ``(distance, index)``; ties by lower index everywhere).

    python bench/bench_search.py                      # full size (slow on 2 cores)
    python bench/bench_search.py --num-db 100000 --bits 64,128
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

from hpsh_tf2.atomic import write_text_atomic
from hpsh_tf2.evaluation.search import search
from hpsh_tf2.ops.hamming import hamming_topk
from hpsh_tf2.xla import prefer_wide_vectors

prefer_wide_vectors()  # as the CLI does; XLA reads XLA_FLAGS at its first compilation

RESULTS = Path(__file__).resolve().parent / "results" / "bench_search.md"
LENGTHS = (16, 24, 32, 48, 64, 128, 256)
XLA, NOJIT, FAISS, FAISS_1, NUMPY = "tf (XLA)", "tf, no XLA", "faiss", "faiss, 1 thread", "numpy"


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-db", type=int, default=1_000_000)
    parser.add_argument("--num-queries", type=int, default=1_000)
    parser.add_argument(
        "--bits", type=lambda text: tuple(int(b) for b in text.split(",")), default=LENGTHS
    )
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nojit-queries", type=int, default=250)
    parser.add_argument("--numpy-queries", type=int, default=50)
    parser.add_argument("--request-k", type=int, default=100)  # export's default max_k
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


Run = Callable[[], tuple[np.ndarray, np.ndarray]]


def _best_of(runs: dict[str, Run], repeats: int, warm: tuple[str, ...]):
    """Times each callable ``repeats`` times, interleaved; returns best seconds and results."""
    best = {name: float("inf") for name in runs}
    outputs = {name: runs[name]() for name in warm if name in runs}  # XLA compilation
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outputs


def _faiss_runners(db: np.ndarray, query: np.ndarray, k: int) -> dict[str, Run]:
    """FAISS with its default OpenMP threads and with one thread (spin-waiting OpenMP threads
    suffer on a loaded machine); the table's FAISS column is the faster of the two."""
    try:
        faiss = importlib.import_module("faiss")
    except ImportError:
        return {}
    index = faiss.IndexBinaryFlat(db.shape[1] * 8)
    index.add(db)
    default_threads = faiss.omp_get_max_threads()

    def runner(threads: int) -> Run:
        def run():
            faiss.omp_set_num_threads(threads)
            try:
                distances, indices = index.search(query, k)
            finally:
                faiss.omp_set_num_threads(default_threads)
            return indices, distances

        return run

    return {FAISS: runner(default_threads), FAISS_1: runner(1)}


def _sorted_rows(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows re-sorted by ``(distance, index)`` (FAISS's order inside a tie is its own)."""
    keys = distances.astype(np.int64) * (int(indices.max(initial=0)) + 1) + indices
    order = np.argsort(keys, axis=1, kind="stable")
    return np.take_along_axis(indices, order, 1), np.take_along_axis(distances, order, 1)


def _one_length(args: argparse.Namespace, bits: int, rng: np.random.Generator) -> dict:
    """Times every backend at one code length; returns rates and agreement."""
    db = rng.integers(0, 256, (args.num_db, bits // 8), dtype=np.uint8)
    query = rng.integers(0, 256, (args.num_queries, bits // 8), dtype=np.uint8)
    db_tensor = tf.constant(db)
    counts = {
        XLA: args.num_queries,
        NOJIT: min(args.nojit_queries, args.num_queries),
        NUMPY: min(args.numpy_queries, args.num_queries),
    }

    def tf_run(queries: np.ndarray, jit: bool) -> Run:
        queries = tf.constant(queries)

        def run():
            indices, distances = hamming_topk(queries, db_tensor, k=args.k, jit_compile=jit)
            return indices.numpy(), distances.numpy()

        return run

    def numpy_run():
        result = search(query[: counts[NUMPY]], db, k=args.k, backend="numpy", packed=True)
        return result.indices, result.distances

    runs = {XLA: tf_run(query, True), NOJIT: tf_run(query[: counts[NOJIT]], False)}
    for name, run in _faiss_runners(db, query, args.k).items():
        runs[name] = run
        counts[name] = args.num_queries
    runs[NUMPY] = numpy_run
    best, outputs = _best_of(runs, args.repeats, warm=(XLA, NOJIT))
    for name in (FAISS, FAISS_1):
        if name in outputs:
            outputs[name] = _sorted_rows(*outputs[name])
    ref_idx, ref_dist = outputs[XLA]
    same = all(
        np.array_equal(idx, ref_idx[: len(idx)]) and np.array_equal(dist, ref_dist[: len(dist)])
        for idx, dist in outputs.values()
    )
    rates = {name: counts[name] / best[name] for name in best}
    request_ms = _one_request_ms(query[:1], db_tensor, min(args.request_k, args.num_db), args)
    faiss_threads = "-"
    if FAISS_1 in rates:
        single = rates.pop(FAISS_1)
        faiss_threads = "1" if single > rates[FAISS] else "default"
        rates[FAISS] = max(rates[FAISS], single)
    print(f"{bits} bits: " + ", ".join(f"{n} {r:,.0f} q/s" for n, r in rates.items()), flush=True)
    return {
        "rates": rates,
        "same": same,
        "faiss_threads": faiss_threads,
        "request_ms": request_ms,
    }


def _one_request_ms(query: np.ndarray, db: tf.Tensor, k: int, args) -> float:
    """Best time (ms) of one no-XLA search of one query, as in a one-image ``retrieve``."""
    query = tf.constant(query)

    def run():
        return hamming_topk(query, db, k=k, jit_compile=False)[0].numpy()

    run()  # trace
    best, _ = _best_of({"request": run}, args.repeats, warm=())
    return 1000 * best["request"]


def main(argv: list[str] | None = None) -> str:
    args = _parse(argv)
    rng = np.random.default_rng(args.seed)
    rows = {bits: _one_length(args, bits, rng) for bits in args.bits}
    return _table(args, rows)


def _fmt_ratio(rates: dict[str, float], num: str, den: str) -> str:
    if num not in rates or den not in rates:
        return "-"
    return f"{rates[num] / rates[den]:.2f}x"


def _table(args: argparse.Namespace, rows: dict[int, dict]) -> str:
    lines = [
        "# Hamming top-k search benchmark",
        "",
        f"{args.num_queries:,} queries x {args.num_db:,} random database codes, k = {args.k}, "
        f"best of {args.repeats} interleaved rounds per code length; {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), TF {tf.__version__}.",
        f"`tf, no XLA` (what the SavedModel's `retrieve` signature runs) ran on the first "
        f"{min(args.nojit_queries, args.num_queries)} queries and NumPy on the first "
        f"{min(args.numpy_queries, args.num_queries)}: their rates are per query.",
        f"Load average when the table was written: {os.getloadavg()[0]:.2f} (the machine is "
        "shared; compare ratios, which were measured in the same run).",
        "FAISS: the faster of its default OpenMP threads and one thread (the threads column).",
        f"XLA_FLAGS: `{os.environ.get('XLA_FLAGS', '')}` (512-bit vectors, as the CLI sets them; "
        "see `hpsh_tf2/xla.py`).",
        "",
        "| bits | tf (XLA) q/s | tf, no XLA q/s | FAISS q/s | FAISS threads | NumPy q/s | "
        "XLA / FAISS | no XLA / FAISS | no XLA / XLA | same result | 1 request, no XLA, ms |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for bits, row in rows.items():
        rates = row["rates"]
        cells = [f"{rates[name]:,.0f}" if name in rates else "-" for name in (XLA, NOJIT)]
        cells.append(f"{rates[FAISS]:,.0f}" if FAISS in rates else "not installed")
        cells.append(row["faiss_threads"])
        cells.append(f"{rates[NUMPY]:,.0f}")
        cells += [
            _fmt_ratio(rates, XLA, FAISS),
            _fmt_ratio(rates, NOJIT, FAISS),
            _fmt_ratio(rates, NOJIT, XLA),
            "yes" if row["same"] else "NO",
            f"{row['request_ms']:.1f}",
        ]
        lines.append(f"| {bits} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "'same result': indices and distances of every backend equal the XLA op's (FAISS rows "
        "re-sorted by (distance, index); ties by lower database index).",
        f"'1 request': one query, k = {args.request_k}, no XLA, against the whole database (a "
        "one-image `retrieve` request's search; its forward pass is in "
        "bench/results/serving.md).",
    ]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.output, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
