"""Archive index benchmark: build throughput vs ``extract``, and Milvus Lite search vs TF search.

Part 1, build (one run, interleaved): the same archive (``--images`` AID JPEGs, each linked
``--copies`` times under its class folder) through (a) ``extract_features`` (what ``python
cli.py extract`` runs: build the backbone, tf.data decode, forward, write the cache), (b)
``index build`` in-process (load the exported SavedModel, whose ``serving_default`` decodes,
resizes and runs backbone and head; upserts into a new Milvus Lite file) and (c) ``index build
--runner beam`` (the local FnApiRunner). Every time is end to end, start-up included (backbone
build, SavedModel load, Milvus Lite start, pipeline start). Targets: (b) >= 0.9x and (c) >=
0.7x of (a)'s images/s. The last column is (b)/(c)'s rate once the model is loaded.

Part 2, search: N random 64-bit codes inserted into Milvus Lite (rows/s), Q queries with
k = 20 (queries/s, exact ``BIN_FLAT``), next to our in-process TF search
(:func:`hpsh_tf2.evaluation.search.search`) on the same codes; distances are compared.

    python bench/bench_index.py [--images 300] [--copies 4] [--image-size 299] [--codes 1000000]
        [--queries 1000] [--skip-build] [--skip-search]

Writes bench/results/index.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from hpsh_tf2.evaluation.search import search
from hpsh_tf2.export import export_saved_model
from hpsh_tf2.features import extract_features
from hpsh_tf2.index.build import build_index
from hpsh_tf2.index.encoder import ModelRecord
from hpsh_tf2.index.store import IndexStore
from hpsh_tf2.models.backbone import build_backbone
from hpsh_tf2.models.head import build_hash_model, build_image_hash_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aid_sample"
OUT = Path(__file__).resolve().parent / "results" / "index.md"


def _archive(dest: Path, count: int, copies: int) -> list[str]:
    """Links the first ``count`` AID JPEGs ``copies`` times each (class folders kept) under
    ``dest``: a larger archive, so that start-up costs weigh as little as in a real one."""
    sources = sorted(p.relative_to(DATA) for p in DATA.glob("*/*.jpg"))[:count]
    paths = []
    for rel in sources:
        (dest / rel.parent).mkdir(parents=True, exist_ok=True)
        for copy in range(copies):
            name = (rel.parent / f"{rel.stem}_{copy}{rel.suffix}").as_posix()
            os.symlink(DATA / rel, dest / name)
            paths.append(name)
    return sorted(paths)


def bench_build(args: argparse.Namespace, work: Path) -> list[str]:
    archive = work / "archive"
    paths = _archive(archive, args.images, args.copies)
    n = len(paths)
    backbone = build_backbone("inception_v3", weights="none", image_size=args.image_size)
    head = build_hash_model(backbone.output_shape[-1], bits=64)
    version = export_saved_model(
        image_model=build_image_hash_model(backbone, head),
        backbone="inception_v3",
        image_size=args.image_size,
        bits=64,
        export_dir=work / "export",
        model_name="bench",
        warmup_images=[],
    )

    def extract() -> float:
        out = work / f"features-{time.monotonic_ns()}"
        start = time.perf_counter()
        extract_features(
            paths=paths,
            root=archive,
            out_dir=out,
            backbone="inception_v3",
            weights="none",
            image_size=args.image_size,
            batch_size=args.batch_size,
            progress=False,
        )
        seconds = time.perf_counter() - start
        shutil.rmtree(out)
        return seconds

    def build(runner: str) -> float:
        uri = work / f"{runner}-{time.monotonic_ns()}.db"
        start = time.perf_counter()
        report = build_index(
            version,
            archive,
            uri=str(uri),
            batch_size=args.batch_size,
            runner=runner,
            workdir=work,
            progress=False,
        )
        seconds = time.perf_counter() - start
        if report.rows != n:
            raise RuntimeError(f"{runner} build indexed {report.rows} of {n} images")
        steady[runner] = max(steady.get(runner, 0.0), report.encoded_per_second)
        return seconds

    steady: dict[str, float] = {}
    extract()  # warm-up: traces the backbone, fills the OS file cache
    times: dict[str, list[float]] = {"extract": [], "local": [], "beam": []}
    for _ in range(args.repeats):
        times["extract"].append(extract())
        times["local"].append(build("local"))
        times["beam"].append(build("beam"))
    best = {name: min(values) for name, values in times.items()}
    rate = {name: n / seconds for name, seconds in best.items()}
    rows = [
        f"## Build: {n:,} files ({args.images} AID JPEGs x {args.copies} links), "
        f"InceptionV3 at {args.image_size} px (random weights), "
        f"64 bits, batch {args.batch_size}, best of {args.repeats}",
        "",
        "| path | seconds | images/s | ratio vs extract | target | images/s after model load |",
        "|---|---:|---:|---:|---|---:|",
        f"| `extract` (backbone build, tf.data, forward, cache write) | {best['extract']:.2f} | "
        f"{rate['extract']:.1f} | 1.00x | | |",
    ]
    for name, label, target in (
        ("local", "`index build` in-process (SavedModel + Milvus Lite upserts)", 0.9),
        ("beam", "`index build --runner beam` (local FnApiRunner, shards bulk-loaded)", 0.7),
    ):
        ratio = rate[name] / rate["extract"]
        verdict = "met" if ratio >= target else "NOT met"
        rows.append(
            f"| {label} | {best[name]:.2f} | {rate[name]:.1f} | {ratio:.2f}x | "
            f">= {target}x: {verdict} | {steady[name]:.1f} |"
        )
    return rows


def bench_search(args: argparse.Namespace, work: Path) -> list[str]:
    rng = np.random.default_rng(0)
    n, q, k = args.codes, args.queries, 20
    db = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (q, 8), dtype=np.uint8)
    record = ModelRecord("0" * 16, "-", "bench", 1, None, 64, "-", 0)
    paths = [f"{i:08d}" for i in range(n)]
    with IndexStore(str(work / "search.db"), "codes") as store:
        store.create(record)
        start = time.perf_counter()
        for lo in range(0, n, args.insert_batch):
            hi = min(lo + args.insert_batch, n)
            store.upsert(
                paths[lo:hi], db[lo:hi], [""] * (hi - lo), [0] * (hi - lo), [0] * (hi - lo)
            )
        insert_s = time.perf_counter() - start
        count = store.count()
        store.search(queries[:10], top=k)  # warm-up (loads the segments)
        start = time.perf_counter()
        hits = []
        for lo in range(0, q, 100):
            hits.extend(store.search(queries[lo : lo + 100], top=k))
        milvus_s = time.perf_counter() - start
    search(queries, db, k=k, backend="tf", packed=True)  # warm-up (same shapes: traces, XLA)
    start = time.perf_counter()
    ref = search(queries, db, k=k, backend="tf", packed=True)
    tf_s = time.perf_counter() - start
    got = np.array([[h.distance for h in row] for row in hits])
    same = bool(np.array_equal(got, ref.distances))
    return [
        f"## Search: {n:,} random 64-bit codes, {q:,} queries, k = {k} (exact)",
        "",
        "| step | seconds | rate | note |",
        "|---|---:|---:|---|",
        f"| Milvus Lite insert ({args.insert_batch:,} rows per upsert) | {insert_s:.1f} | "
        f"{n / insert_s:,.0f} rows/s | {count:,} rows after |",
        f"| Milvus Lite search (BIN_FLAT, HAMMING, 100 queries per call) | {milvus_s:.2f} | "
        f"{q / milvus_s:,.0f} queries/s | distances equal TF search: {'yes' if same else 'NO'} |",
        f"| in-process TF search (`evaluation.search`, XLA) | {tf_s:.2f} | "
        f"{q / tf_s:,.0f} queries/s | |",
        f"| ratio Milvus Lite / TF | | {tf_s / milvus_s:.3f}x | the cost of the server hop |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--insert-batch", type=int, default=10_000)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_index_"))
    try:
        lines = [
            "# Archive index benchmark (bench/bench_index.py)",
            "",
            f"{os.cpu_count()} CPU cores, shared machine (load average "
            f"{os.getloadavg()[0]:.2f} at start); timings are noisy.",
            "",
        ]
        if not args.skip_build:
            lines += [*bench_build(args, work), ""]
        if not args.skip_search:
            lines += [*bench_search(args, work), ""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
