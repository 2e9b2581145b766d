"""Latency and throughput of the exported SavedModel against the bare Keras forward pass.

Variants, timed in the same process, interleaved round by round (medians reported):

* ``keras``: the Keras image model in a ``tf.function`` on already decoded, resized and
  preprocessed images (the baseline);
* ``encode_images``: the SavedModel signature on already decoded images at the model size
  (preprocessing, the model, binarisation and packing): the model-only overhead;
* ``serving_default``: the SavedModel on JPEG bytes (decode + resize + everything above): what
  a client of TF Serving pays, minus the network;
* ``decode only``: the pipeline's decode + resize alone (host side), for reference.

Usage::

    python bench/bench_serving.py [--image-size 299] [--backbone inception_v3] [--rounds 5]

Writes the table to ``bench/results/serving.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from hpsh_tf2.data.images import decode_image, resize_image
from hpsh_tf2.export import export_saved_model
from hpsh_tf2.models.backbone import build_backbone, preprocess_images
from hpsh_tf2.models.head import build_hash_model, build_image_hash_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "aid_sample"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--image-size", type=int, default=299)
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per variant")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of JPEG images")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.md")
    return parser.parse_args()


def _jpeg_files(root: Path, count: int) -> list[bytes]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no JPEG files under {root}")
    return [files[i % len(files)].read_bytes() for i in range(count)]


def _elapsed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def _time_interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median milliseconds of each variant; one warm-up call each, then interleaved rounds."""
    for fn in variants.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_elapsed_ms(fn))
    return {name: statistics.median(values) for name, values in samples.items()}


def _variants(model, loaded, data: list[bytes], size: int, backbone: str):
    decode = tf.function(
        lambda b: tf.map_fn(
            lambda x: resize_image(decode_image(x), size),
            b,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
    )
    image_bytes = tf.constant(data)
    pixels = decode(image_bytes)
    preprocessed = preprocess_images(pixels, backbone)
    keras_fn = tf.function(lambda x: model(x, training=False))
    serve = loaded.signatures["serving_default"]
    encode = loaded.signatures["encode_images"]
    return {
        "keras": lambda: keras_fn(preprocessed).numpy(),
        "encode_images": lambda: encode(images=pixels)["codes"].numpy(),
        "serving_default": lambda: serve(image_bytes=image_bytes)["codes"].numpy(),
        "decode only": lambda: decode(image_bytes).numpy(),
    }


def _rows(batch: int, timings: dict[str, float]) -> list[str]:
    base = timings["keras"]
    rows = []
    for name, ms in timings.items():
        ratio = "-" if name == "decode only" else f"{ms / base:.3f}"
        rows.append(f"| {batch} | {name} | {ms:.1f} | {batch * 1000.0 / ms:.1f} | {ratio} |")
    return rows


def main() -> None:
    args = _parse_args()
    backbone = build_backbone(args.backbone, weights="none", image_size=args.image_size)
    head = build_hash_model(backbone.output_shape[-1], bits=args.bits)
    model = build_image_hash_model(backbone, head)
    with tempfile.TemporaryDirectory() as tmp:
        version_dir = export_saved_model(
            image_model=model,
            backbone=args.backbone,
            image_size=args.image_size,
            bits=args.bits,
            export_dir=tmp,
            model_name="bench",
        )
        loaded = tf.saved_model.load(str(version_dir))
        lines = [
            f"# Serving benchmark: {args.backbone} at {args.image_size} px, {args.bits} bits",
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}, "
            f"devices: {[d.device_type for d in tf.config.list_physical_devices()]}. "
            f"Random weights (weights=none). Median of {args.rounds} interleaved rounds. "
            "`vs keras` = time / Keras forward time on the same images (model-only overhead "
            "of the SavedModel = encode_images ratio - 1).",
            "",
            "| batch | variant | median ms | images/s | vs keras |",
            "|---:|---|---:|---:|---:|",
        ]
        for batch in args.batch_sizes:
            data = _jpeg_files(args.data, batch)
            variants = _variants(model, loaded, data, args.image_size, args.backbone)
            lines.extend(_rows(batch, _time_interleaved(variants, args.rounds)))
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
