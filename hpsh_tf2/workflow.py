"""The run's steps as Python functions: prepare, extract, train, evaluate, export, query, run, demo.

Each step takes a resolved :class:`~hpsh_tf2.config.Config`, saves it as
``<workdir>/config.yaml`` and writes its outputs under ``<workdir>`` (see the README's
"Outputs" table). ``cli.py`` is a thin argument parser over these functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpsh_tf2.atomic import write_json_atomic
from hpsh_tf2.config import Config, config_to_dict, load_config, save_config
from hpsh_tf2.data.scan import ScanResult, scan_dataset
from hpsh_tf2.data.split import Split, prepare_split, split_table
from hpsh_tf2.features import FeatureSet, extract_features, load_feature_file

__all__ = [
    "Prepared",
    "demo",
    "demo_config",
    "evaluate",
    "export",
    "extract",
    "prepare",
    "run",
    "train",
]

logger = logging.getLogger(__name__)
SUBSETS = ("train", "val", "test")


@dataclass(frozen=True)
class Prepared:
    """A scanned (or loaded) dataset and its split.

    Attributes:
        config: The resolved config.
        scan: The images (or the rows of a bring-your-own features file).
        split: The train/val/test split.
        split_created: Whether this call made the split (False: re-used ``split.json``).
        features: The bring-your-own features, if ``data.features`` is set.
    """

    config: Config
    scan: ScanResult
    split: Split
    split_created: bool
    features: FeatureSet | None = None

    @property
    def root(self) -> Path:
        """The image root (for bring-your-own features: the folder of the .npz)."""
        return Path(self.scan.root)

    def subset_paths(self, name: str) -> tuple[str, ...]:
        """Relative paths of one subset."""
        return tuple(self.split.subsets[name].paths)

    def subset_labels(self, name: str) -> np.ndarray:
        """Labels of one subset (int32)."""
        return np.asarray(self.split.subsets[name].labels, np.int32)

    def all_paths(self) -> tuple[str, ...]:
        """Every split path, train then val then test: the row order of cached features."""
        return tuple(p for name in SUBSETS for p in self.subset_paths(name))


def _start(config: Config) -> Path:
    workdir = config.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    return workdir


def _scan_from_features(features: FeatureSet, source: Path) -> ScanResult:
    return ScanResult(
        root=str(source.resolve().parent),
        class_names=features.class_names,
        paths=features.paths,
        labels=features.labels,
    )


def prepare(config: Config, *, echo: Callable[[str], None] = print) -> Prepared:
    """Scans the dataset (or loads the features file), makes or re-uses the split.

    Writes ``config.yaml``, ``split.json`` and ``scan_report.json`` and prints a per-class table.

    Raises:
        ValueError: If neither ``data.root`` nor ``data.features`` is set, or the data is bad.
    """
    workdir = _start(config)
    data = config.data
    features = None
    if data.features:
        features = load_feature_file(data.features)
        scan = _scan_from_features(features, Path(data.features))
    elif data.root:
        scan = scan_dataset(data.root, on_bad_image=data.on_bad_image, verify=data.verify_images)
    else:
        raise ValueError(
            "no data: set data.root (a folder of class folders) or data.features (a .npz), "
            "e.g. --set data.root=/path/to/AID"
        )
    split, created = prepare_split(
        scan,
        workdir / "split.json",
        train=data.split.train,
        val=data.split.val,
        test=data.split.test,
        seed=data.seed,
    )
    write_json_atomic(
        workdir / "scan_report.json",
        {
            "root": scan.root,
            "classes": len(scan.class_names),
            "images": len(scan.paths),
            "counts": scan.counts_per_class(),
            "skipped": [{"path": s.path, "reason": s.reason} for s in scan.skipped],
            "ignored": scan.ignored,
        },
    )
    echo(split_table(split, scan))
    if scan.skipped:
        echo(
            f"skipped {len(scan.skipped)} undecodable image(s); see {workdir / 'scan_report.json'}"
        )
    echo(("created " if created else "re-used ") + str(workdir / "split.json"))
    return Prepared(config, scan, split, created, features)


def extract(
    config: Config, *, prepared: Prepared | None = None, progress: bool = True
) -> dict[str, np.ndarray]:
    """Backbone features of every subset (cached in ``<workdir>/features``).

    With ``data.features`` the rows of the file are returned instead, in split order.
    """
    prepared = prepared or prepare(config, echo=logger.info)
    if prepared.features is not None:
        index = {path: row for row, path in enumerate(prepared.features.paths)}
        return {
            name: prepared.features.features[[index[p] for p in prepared.subset_paths(name)]]
            for name in SUBSETS
        }
    model = config.model
    all_features = extract_features(
        paths=prepared.all_paths(),
        root=prepared.root,
        out_dir=config.workdir / "features",
        backbone=model.backbone,
        weights=model.weights,
        image_size=model.image_size,
        seed=model.init_seed,
        batch_size=config.train.extract_batch_size,
        progress=progress,
    )
    out, start = {}, 0
    for name in SUBSETS:
        count = len(prepared.subset_paths(name))
        out[name] = all_features[start : start + count]
        start += count
    return out


def _inputs(prepared: Prepared, name: str, features: dict[str, np.ndarray] | None):
    from hpsh_tf2.train import subset_inputs

    labels = prepared.subset_labels(name)
    if features is not None:
        return subset_inputs(labels, features=features[name])
    paths = [str(prepared.root / p) for p in prepared.subset_paths(name)]
    return subset_inputs(labels, paths=paths)


def train(config: Config, *, prepared: Prepared | None = None, verbose: int = 2):
    """Trains the hash model (features or end-to-end mode); see :func:`hpsh_tf2.train.train`."""
    from hpsh_tf2.train import train as fit

    prepared = prepared or prepare(config, echo=logger.info)
    features = extract(config, prepared=prepared) if config.train.mode == "features" else None
    if config.train.mode == "end_to_end" and prepared.features is not None:
        raise ValueError(
            "train.mode='end_to_end' needs images; data.features only supports train.mode=features"
        )
    return fit(
        config,
        train_inputs=_inputs(prepared, "train", features),
        val_inputs=_inputs(prepared, "val", features),
        verbose=verbose,
    )


def evaluate(
    config: Config,
    *,
    prepared: Prepared | None = None,
    saved_model: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Retrieval evaluation of the trained model (or an exported SavedModel).

    Writes ``eval/report.json``, ``eval/codes.npz`` and figures; see
    :func:`hpsh_tf2.evaluation.evaluate.evaluate_run`.
    """
    from hpsh_tf2.evaluation.evaluate import evaluate_run

    prepared = prepared or prepare(config, echo=logger.info)
    return evaluate_run(config, prepared=prepared, saved_model=saved_model, echo=echo)


def export(config: Config, *, prepared: Prepared | None = None, echo=print) -> Path:
    """Exports the trained model as a versioned SavedModel for TF Serving.

    The SavedModel maps image bytes to codes and embeds a retrieval database: the codes of
    ``export.database`` (``all`` split images, ``train`` only, or ``none``).

    Returns:
        The new version folder ``<workdir>/export/<name>/<version>``.
    """
    import keras

    from hpsh_tf2.evaluation.evaluate import score_subsets
    from hpsh_tf2.export import (
        RetrievalDatabase,
        export_saved_model,
        read_manifest,
        summarize_export,
    )
    from hpsh_tf2.models.backbone import build_backbone
    from hpsh_tf2.models.head import build_image_hash_model
    from hpsh_tf2.ops.codes import np_binarize, np_pack_codes
    from hpsh_tf2.serving import encode_for_serving

    prepared = prepared or prepare(config, echo=logger.info)
    if prepared.features is not None:
        raise ValueError(
            "export needs the image model; a run on data.features has no backbone to export"
        )
    model_dir = config.workdir / "model"
    if config.train.mode == "end_to_end":
        image_model = keras.saving.load_model(model_dir / "image_model.keras")
    else:
        backbone = build_backbone(
            config.model.backbone,
            weights=config.model.weights,
            image_size=config.model.image_size,
            seed=config.model.init_seed,
        )
        hash_model = keras.saving.load_model(model_dir / "hash_model.keras")
        image_model = build_image_hash_model(backbone, hash_model)
    database = None
    names = {"all": SUBSETS, "train": ("train",), "none": ()}[config.export.database]
    if names:
        score = score_subsets(config, prepared)
        codes = np_binarize(np.concatenate([score(name) for name in names]))
        database = RetrievalDatabase(
            packed_codes=np_pack_codes(codes),
            labels=np.concatenate([prepared.subset_labels(n) for n in names]),
            paths=tuple(p for n in names for p in prepared.subset_paths(n)),
            class_names=tuple(prepared.split.class_names),
        )
    samples = prepared.subset_paths("train")[: config.export.warmup_requests]
    warmup = [encode_for_serving(prepared.root / p) for p in samples]  # TIFF -> PNG
    version_dir = export_saved_model(
        image_model=image_model,
        backbone=config.model.backbone,
        image_size=config.model.image_size,
        bits=config.model.bits,
        export_dir=config.workdir / "export",
        model_name=config.export.name or config.name,
        database=database,
        warmup_images=warmup,
        class_names=tuple(prepared.split.class_names),
        config=config_to_dict(config),
    )
    echo(summarize_export(read_manifest(version_dir), version_dir))
    return version_dir


def _fingerprint(config: Config, sections: tuple[str, ...], extra: str = "") -> str:
    raw = config_to_dict(config)
    payload = {name: raw[name] for name in sections}
    return hashlib.sha256((json.dumps(payload, sort_keys=True) + extra).encode()).hexdigest()[:16]


def _file_stamp(path: Path) -> str:
    if not path.exists():
        return "missing"
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def run(config: Config, *, echo: Callable[[str], None] = print) -> dict:
    """The whole job: prepare, extract (features mode), train, evaluate, export.

    Steps whose outputs are up to date (same inputs, recorded in ``<workdir>/steps.json``) are
    skipped. Returns a summary (mAP@k, bits, export path, which steps ran).
    """
    workdir = _start(config)
    steps_path = workdir / "steps.json"
    steps = json.loads(steps_path.read_text()) if steps_path.is_file() else {}
    ran: dict[str, str] = {}
    prepared = prepare(config, echo=echo)
    split_stamp = _file_stamp(workdir / "split.json")

    train_key = _fingerprint(config, ("data", "model", "train", "sampler", "loss"), split_stamp)
    model_path = workdir / "model" / "hash_model.keras"
    if steps.get("train") == train_key and model_path.is_file():
        ran["train"] = "up to date"
    else:
        result = train(config, prepared=prepared)
        steps["train"] = train_key
        ran["train"] = f"trained; kept epoch {result.selected_epoch} ({result.selection})"
        write_json_atomic(steps_path, steps)

    eval_key = _fingerprint(config, ("eval",), train_key + _file_stamp(model_path))
    report_path = workdir / "eval" / "report.json"
    if steps.get("evaluate") == eval_key and report_path.is_file():
        report = json.loads(report_path.read_text())
        ran["evaluate"] = "up to date"
    else:
        report = evaluate(config, prepared=prepared, echo=echo)
        steps["evaluate"] = eval_key
        ran["evaluate"] = "evaluated"
        write_json_atomic(steps_path, steps)

    export_key = _fingerprint(config, ("export",), train_key + _file_stamp(model_path))
    export_path: Path | None = None
    if prepared.features is not None:
        ran["export"] = "skipped: a data.features run has no image model to export"
    elif steps.get("export") == export_key and Path(steps.get("export_path", "")).is_dir():
        export_path = Path(steps["export_path"])
        ran["export"] = "up to date"
    else:
        export_path = export(config, prepared=prepared, echo=echo)
        steps["export"] = export_key
        steps["export_path"] = str(export_path)
        ran["export"] = "exported"
        write_json_atomic(steps_path, steps)

    k = config.eval.k
    summary = {
        f"map@{k}": report.get(f"map@{k}"),
        "bits": config.model.bits,
        "protocol": config.eval.protocol,
        "export": None if export_path is None else str(export_path),
        "steps": ran,
    }
    echo("")
    echo("== summary ==")
    for step, status in ran.items():
        echo(f"  {step:<9} {status}")
    echo(f"  mAP@{k} ({config.eval.protocol} protocol): {summary[f'map@{k}']:.4f}")
    echo(f"  bits: {config.model.bits}")
    echo(f"  SavedModel: {export_path or '-'}")
    return summary


DEMO_OVERRIDES = (
    "name=demo",
    "model.backbone=inception_v3",
    "model.weights=none",
    "model.image_size=75",
    "model.bits=16",
    "train.mode=features",
    "train.epochs=4",
    "train.steps_per_epoch=25",
    "train.classes_per_batch=null",
    "train.samples_per_class=4",
    "train.learning_rate=0.001",
    "train.extract_batch_size=32",
    "data.split.train=0.5",
    "data.split.val=0.1",
    "data.split.test=0.4",
    "eval.k=10",
    "eval.interval=20",
    "eval.max_grids=4",
)


def demo_config(
    workdir: str | os.PathLike = "runs/demo",
    overrides=(),
    *,
    base: str | os.PathLike | None = None,
) -> Config:
    """The embedded demo's config: tiny InceptionV3 (75 px, random weights) on the demo data.

    Args:
        workdir: Output folder; the demo dataset goes to ``<workdir>/data``.
        overrides: Dotted-key overrides applied last.
        base: A config file to start from (the demo settings are applied on top of it).
    """
    workdir = Path(workdir)
    demo = (*DEMO_OVERRIDES, f"data.root={workdir / 'data'}", f"output.workdir={workdir}")
    return load_config(base, [*demo, *overrides])


def demo(
    workdir: str | os.PathLike = "runs/demo",
    overrides=(),
    *,
    base: str | os.PathLike | None = None,
    echo=print,
) -> dict:
    """Generates the demo dataset, runs the whole job on it, and queries the export."""
    from hpsh_tf2.data.demo import make_demo_dataset
    from hpsh_tf2.serving import format_neighbours, query_images

    config = demo_config(workdir, overrides, base=base)
    root = make_demo_dataset(config.data.root)
    echo(f"demo dataset: {root}")
    summary = run(config, echo=echo)
    prepared = prepare(config, echo=lambda _: None)
    query = prepared.root / prepared.subset_paths("test")[0]
    neighbours = query_images(Path(summary["export"]).parent, [str(query)], top=5)[0]
    echo(f"\nquery {query} -> top 5 via the SavedModel's retrieve signature:")
    echo(format_neighbours(neighbours))
    summary["query"] = str(query)
    return summary
