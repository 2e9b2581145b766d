"""The run's steps as Python functions: prepare, extract, train, evaluate, export, run, demo.

This is the orchestration layer: it knows the run folder (:class:`~hpsh_tf2.layout.RunLayout`)
and wires the libraries below it (data, features, training, evaluation, export). Each step
takes a resolved :class:`~hpsh_tf2.config.Config`, saves it as ``config.yaml`` of the run
folder and writes its outputs there (see the README's "Outputs" table). ``cli.py`` is a thin
argument parser over these functions.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from hpsh_tf2.atomic import write_json_atomic
from hpsh_tf2.config import Config, config_fingerprint, config_to_dict, load_config, save_config
from hpsh_tf2.data.demo import make_demo_dataset
from hpsh_tf2.data.split import SUBSET_NAMES, prepare_split, split_table
from hpsh_tf2.dataset import Prepared, cached_scan, scan_from_features
from hpsh_tf2.encode import ScoreEncoder, SignatureEncoder
from hpsh_tf2.errors import HPSHError
from hpsh_tf2.evaluation.evaluate import (
    EncodedSet,
    evaluate_codes,
    protocol_subsets,
    save_evaluation,
    save_figures,
)
from hpsh_tf2.evaluation.report import format_report_table
from hpsh_tf2.export import RetrievalDatabase, export_saved_model, read_manifest, summarize_export
from hpsh_tf2.features import extract_features, load_feature_file
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.models.backbone import backbone_from_config
from hpsh_tf2.models.head import build_image_hash_model
from hpsh_tf2.ops.codes import np_binarize, np_pack_codes
from hpsh_tf2.serving import encode_for_serving, format_neighbours, load_exported, query_images
from hpsh_tf2.training import TrainResult, fit_hash_model
from hpsh_tf2.training.distributed import start_multi_worker

__all__ = [
    "WorkflowError",
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
Echo = Callable[[str], None]


class WorkflowError(HPSHError, ValueError):
    """A step cannot run with this config or run folder (missing input, wrong mode)."""


def _start(config: Config) -> RunLayout:
    layout = RunLayout(config.workdir)
    layout.workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, layout.config)
    return layout


# --------------------------------------------------------------------------- prepare


def prepare(config: Config, *, echo: Echo = print) -> Prepared:
    """Scans the dataset (or loads the features file), makes or re-uses the split.

    The verified scan is cached in the run folder and re-used while the files under
    ``data.root`` are unchanged (names, sizes, modification times). Writes ``config.yaml``,
    ``split.json`` and ``scan_report.json`` and prints a per-class table.

    Raises:
        WorkflowError: If neither ``data.root`` nor ``data.features`` is set.
        DatasetError: If the data is unusable (see :func:`hpsh_tf2.data.scan.scan_dataset`).
    """
    layout = _start(config)
    data = config.data
    features = None
    if data.features:
        features = load_feature_file(data.features)
        scan = scan_from_features(features, data.features)
    elif data.root:
        scan, hit = cached_scan(
            data.root, layout.scan_cache, on_bad_image=data.on_bad_image, verify=data.verify_images
        )
        if hit:
            logger.info("re-used the scan of %s (files unchanged)", scan.root)
    else:
        raise WorkflowError(
            "no data: set data.root (a folder of class folders) or data.features (a .npz), "
            "e.g. --set data.root=/path/to/AID"
        )
    split_fractions = data.split
    split, created = prepare_split(
        scan,
        layout.split,
        train=split_fractions.train,
        val=split_fractions.val,
        test=split_fractions.test,
        seed=data.seed,
    )
    write_json_atomic(
        layout.scan_report,
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
        echo(f"skipped {len(scan.skipped)} undecodable image(s); see {layout.scan_report}")
    echo(("created " if created else "re-used ") + str(layout.split))
    return Prepared(scan, split, created, features)


# --------------------------------------------------------------------------- extract


def extract(
    config: Config, *, prepared: Prepared | None = None, progress: bool = True
) -> dict[str, np.ndarray]:
    """Backbone features of every subset (cached in the run folder's ``features/``).

    With ``data.features`` the rows of the file are returned instead, in split order.
    """
    prepared = prepared or prepare(config, echo=logger.info)
    if prepared.features is not None:
        return prepared.feature_rows()
    model = config.model
    all_features = extract_features(
        paths=prepared.all_paths(),
        root=prepared.root,
        out_dir=RunLayout(config.workdir).features_dir,
        backbone=model.backbone,
        weights=model.weights,
        image_size=model.image_size,
        seed=model.init_seed,
        batch_size=config.train.extract_batch_size,
        progress=progress,
    )
    out, start = {}, 0
    for name in SUBSET_NAMES:
        count = len(prepared.subset_paths(name))
        out[name] = all_features[start : start + count]
        start += count
    return out


def _mode_features(config: Config, prepared: Prepared) -> dict[str, np.ndarray] | None:
    """Feature rows per subset in features mode; ``None`` end-to-end (the model reads images)."""
    if config.train.mode == "end_to_end":
        if prepared.features is not None:
            raise WorkflowError(
                "train.mode='end_to_end' needs images; data.features only supports "
                "train.mode=features"
            )
        return None
    return extract(config, prepared=prepared, progress=False)


# --------------------------------------------------------------------------- train


def train(config: Config, *, prepared: Prepared | None = None, verbose: int = 2) -> TrainResult:
    """Trains the hash model (features or end-to-end mode); writes ``model/``.

    See :func:`hpsh_tf2.training.fit_hash_model`.
    """
    start_multi_worker(config)  # train.strategy=multi_worker: before TensorFlow runs anything
    prepared = prepared or prepare(config, echo=logger.info)
    features = _mode_features(config, prepared)
    return fit_hash_model(
        config,
        train_inputs=prepared.inputs("train", features),
        val_inputs=prepared.inputs("val", features),
        layout=RunLayout(config.workdir),
        verbose=verbose,
    )


# --------------------------------------------------------------------------- evaluate


def _model_encoder(config: Config, layout: RunLayout) -> ScoreEncoder:
    """The trained Keras model of the run folder, as a subset encoder."""
    path = layout.selected_model(config.train.mode)
    if not path.is_file():
        raise WorkflowError(f"no trained model at {path}; run train first")
    return ScoreEncoder(
        keras.saving.load_model(path),
        batch_size=config.train.eval_batch_size,
        image_size=config.model.image_size,
        backbone=config.model.backbone,
    )


def _subset_scorer(
    config: Config, prepared: Prepared, saved_model: str | os.PathLike | None
) -> Callable[[str], np.ndarray]:
    """A function returning the sigmoid scores of a named subset (Keras model or SavedModel)."""
    if saved_model is None:
        encoder = _model_encoder(config, RunLayout(config.workdir))
        features = _mode_features(config, prepared)
        return lambda name: encoder(prepared.inputs(name, features))
    if prepared.features is not None:
        raise WorkflowError("evaluating a SavedModel needs images; data.features has none")
    signature = load_exported(saved_model).signatures["encode_images"]
    encoder = SignatureEncoder(
        signature,
        bits=config.model.bits,
        batch_size=config.train.eval_batch_size,
        image_size=config.model.image_size,
    )
    return lambda name: encoder(prepared.inputs(name))


def _encoded(prepared: Prepared, names, score) -> EncodedSet:
    scores = np.concatenate([score(name) for name in names])
    labels = np.concatenate([prepared.subset_labels(name) for name in names])
    paths = tuple(p for name in names for p in prepared.subset_paths(name))
    return EncodedSet(np_binarize(scores), labels, paths)


def evaluate(
    config: Config,
    *,
    prepared: Prepared | None = None,
    saved_model: str | os.PathLike | None = None,
    echo: Echo = print,
) -> dict:
    """Retrieval evaluation of the trained model (or an exported SavedModel).

    Encodes the protocol's queries and database, searches, and writes ``eval/report.json``,
    ``eval/codes.npz`` and figures.

    Args:
        config: The resolved config (``eval.*`` keys).
        prepared: The dataset and split (default: :func:`prepare`).
        saved_model: Evaluate an exported SavedModel (a model or version folder) instead of
            the Keras model of the run folder.
        echo: Where the summary table is printed.

    Returns:
        The report dictionary (also written to ``eval/report.json``).
    """
    prepared = prepared or prepare(config, echo=logger.info)
    layout = RunLayout(config.workdir)
    query_names, db_names, exclude_self = protocol_subsets(config.eval.protocol)
    score = _subset_scorer(config, prepared, saved_model)
    queries = _encoded(prepared, query_names, score)
    database = queries if exclude_self else _encoded(prepared, db_names, score)
    report, result = evaluate_codes(
        queries=queries, database=database, exclude_self=exclude_self, config=config.eval
    )
    report.update(
        {
            "model": str(saved_model) if saved_model else str(layout.model_dir),
            "queries": list(query_names),
            "database": list(db_names),
        }
    )
    layout.eval_dir.mkdir(parents=True, exist_ok=True)
    save_evaluation(
        report,
        queries=queries,
        database=database,
        class_names=prepared.class_names,
        report_path=layout.report,
        codes_path=layout.codes,
    )
    if config.eval.figures:
        save_figures(
            layout.eval_dir,
            report=report,
            result=result,
            queries=queries,
            database=database,
            class_names=prepared.class_names,
            config=config.eval,
            image_root=None if prepared.features is not None else prepared.root,
        )
    echo(format_report_table(report))
    echo(f"wrote {layout.report} and {layout.codes}")
    return report


# --------------------------------------------------------------------------- export


def _image_model(config: Config, layout: RunLayout) -> keras.Model:
    """The trained image -> scores model: end-to-end, or the backbone followed by the head."""
    if config.train.mode == "end_to_end":
        return keras.saving.load_model(layout.image_model)
    hash_model = keras.saving.load_model(layout.hash_model)
    return build_image_hash_model(backbone_from_config(config.model), hash_model)


def _retrieval_database(config: Config, prepared: Prepared) -> RetrievalDatabase | None:
    """The codes of ``export.database`` with their labels, paths and class names."""
    names = {"all": SUBSET_NAMES, "train": ("train",), "none": ()}[config.export.database]
    if not names:
        return None
    score = _subset_scorer(config, prepared, None)
    codes = np_binarize(np.concatenate([score(name) for name in names]))
    return RetrievalDatabase(
        packed_codes=np_pack_codes(codes),
        labels=np.concatenate([prepared.subset_labels(n) for n in names]),
        paths=tuple(p for n in names for p in prepared.subset_paths(n)),
        class_names=prepared.class_names,
    )


def export(config: Config, *, prepared: Prepared | None = None, echo: Echo = print) -> Path:
    """Exports the trained model as a versioned SavedModel for TF Serving.

    The SavedModel maps image bytes to codes and embeds a retrieval database: the codes of
    ``export.database`` (``all`` split images, ``train`` only, or ``none``).

    Returns:
        The new version folder ``export/<name>/<version>`` of the run folder.
    """
    prepared = prepared or prepare(config, echo=logger.info)
    if prepared.features is not None:
        raise WorkflowError(
            "export needs the image model; a run on data.features has no backbone to export"
        )
    layout = RunLayout(config.workdir)
    image_model = _image_model(config, layout)
    database = _retrieval_database(config, prepared)
    samples = prepared.subset_paths("train")[: config.export.warmup_requests]
    warmup = [encode_for_serving(prepared.root / p) for p in samples]  # TIFF -> PNG
    version_dir = export_saved_model(
        image_model=image_model,
        backbone=config.model.backbone,
        image_size=config.model.image_size,
        bits=config.model.bits,
        export_dir=layout.export_root,
        model_name=config.export.name or config.name,
        database=database,
        warmup_images=warmup,
        class_names=prepared.class_names,
        config=config_to_dict(config),
    )
    echo(summarize_export(read_manifest(version_dir), version_dir))
    return version_dir


# --------------------------------------------------------------------------- run


def _file_stamp(path: Path) -> str:
    if not path.exists():
        return "missing"
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class _Steps:
    """``steps.json``: the fingerprint of the inputs each step of :func:`run` last ran with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def up_to_date(self, step: str, key: str, output: Path) -> bool:
        return self.data.get(step) == key and output.exists()

    def record(self, step: str, key: str, **extra: str) -> None:
        self.data[step] = key
        self.data.update(extra)
        write_json_atomic(self.path, self.data)


def run(config: Config, *, echo: Echo = print) -> dict:
    """The whole job: prepare, extract (features mode), train, evaluate, export.

    Steps whose outputs are up to date (same inputs, recorded in ``steps.json``) are skipped.
    Returns a summary (mAP@k, bits, export path, which steps ran).
    """
    if config.train.strategy == "multi_worker":
        raise WorkflowError(
            "run does not support train.strategy=multi_worker: start 'cli.py train' on every "
            "worker, then 'cli.py evaluate' and 'cli.py export' on one machine"
        )
    layout = _start(config)
    steps = _Steps(layout.steps)
    ran: dict[str, str] = {}
    prepared = prepare(config, echo=echo)

    train_key = config_fingerprint(
        config,
        sections=("data", "model", "train", "sampler", "loss"),
        extra={"split": _file_stamp(layout.split)},
    )
    model_path = layout.hash_model
    if steps.up_to_date("train", train_key, model_path):
        ran["train"] = "up to date"
    else:
        result = train(config, prepared=prepared)
        steps.record("train", train_key)
        ran["train"] = f"trained; kept epoch {result.selected_epoch} ({result.selection})"

    model_stamp = {"train": train_key, "model": _file_stamp(model_path)}
    eval_key = config_fingerprint(config, sections=("eval",), extra=model_stamp)
    if steps.up_to_date("evaluate", eval_key, layout.report):
        report = json.loads(layout.report.read_text())
        ran["evaluate"] = "up to date"
    else:
        report = evaluate(config, prepared=prepared, echo=echo)
        steps.record("evaluate", eval_key)
        ran["evaluate"] = "evaluated"

    export_key = config_fingerprint(config, sections=("export",), extra=model_stamp)
    export_path: Path | None = None
    recorded = steps.data.get("export_path")
    if prepared.features is not None:
        ran["export"] = "skipped: a data.features run has no image model to export"
    elif recorded and steps.up_to_date("export", export_key, Path(recorded)):
        export_path = Path(recorded)
        ran["export"] = "up to date"
    else:
        export_path = export(config, prepared=prepared, echo=echo)
        steps.record("export", export_key, export_path=str(export_path))
        ran["export"] = "exported"
    return _summary(config, report, export_path, ran, echo)


def _summary(config: Config, report: dict, export_path: Path | None, ran: dict, echo) -> dict:
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


# --------------------------------------------------------------------------- demo

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
    echo: Echo = print,
) -> dict:
    """Generates the demo dataset, runs the whole job on it, and queries the export."""
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
