"""Feature extraction throughput vs the bare backbone forward at the same batch size.

``extract_features`` reads real JPEGs from disk, decodes, resizes and preprocesses them in
tf.data and runs the backbone; the baseline feeds already-decoded, preprocessed tensors
straight into the same model. Goal: extraction >= 0.9x the bare forward (the input pipeline
hides behind the model). Writes bench/results/extract.md.

    python bench/bench_extract.py [--images 192] [--batch-size 32] [--image-size 299]
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

from hpsh_tf2.data.pipeline import image_dataset
from hpsh_tf2.features import extract_features
from hpsh_tf2.models.backbone import build_backbone, preprocessor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aid_sample"
OUT = Path(__file__).resolve().parent / "results" / "extract.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    all_paths = sorted(str(p.relative_to(DATA)) for p in DATA.glob("*/*.jpg"))
    paths = [all_paths[i % len(all_paths)] for i in range(args.images)]
    paths = list(dict.fromkeys(paths))  # extraction needs unique rows
    n = len(paths)
    model = build_backbone("inception_v3", weights="none", image_size=args.image_size)
    prep = preprocessor("inception_v3")

    # Baseline input: the same images, decoded and preprocessed up front.
    batches = list(
        image_dataset(
            [str(DATA / p) for p in paths],
            image_size=args.image_size,
            batch_size=args.batch_size,
            preprocess=prep,
        )
    )
    model.predict_on_batch(batches[0])  # trace once for both paths

    def bare() -> float:
        start = time.perf_counter()
        for batch in batches:
            np.asarray(model.predict_on_batch(batch))
        return time.perf_counter() - start

    def extract() -> float:
        out = Path(tempfile.mkdtemp())
        try:
            start = time.perf_counter()
            extract_features(
                paths=paths,
                root=DATA,
                out_dir=out / "features",
                backbone="inception_v3",
                weights="none",
                image_size=args.image_size,
                batch_size=args.batch_size,
                model_factory=lambda: model,
                progress=False,
            )
            return time.perf_counter() - start
        finally:
            shutil.rmtree(out)

    rows = []
    for _ in range(args.repeats):  # interleave to share machine noise
        rows.append((bare(), extract()))
    bare_s = min(r[0] for r in rows)
    extract_s = min(r[1] for r in rows)
    ratio = bare_s / extract_s
    table = "\n".join(
        [
            f"# Feature extraction vs bare forward (InceptionV3, {args.image_size} px, "
            f"batch {args.batch_size}, {n} AID JPEGs, {os.cpu_count()} CPU cores)",
            "",
            f"| path | seconds (best of {args.repeats}) | images/s | ratio vs bare |",
            "|---|---|---|---|",
            f"| bare forward (pre-decoded tensors) | {bare_s:.2f} | {n / bare_s:.1f} | 1.00x |",
            f"| extract_features (disk, decode, cache) | {extract_s:.2f} | {n / extract_s:.1f} "
            f"| {ratio:.2f}x |",
            "",
            f"Goal >= 0.90x: {'met' if ratio >= 0.9 else 'NOT met'}",
        ]
    )
    print(table)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(table + "\n")


if __name__ == "__main__":
    main()
