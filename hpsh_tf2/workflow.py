"""The run's steps as Python functions: prepare, extract, train, evaluate, export, run, demo.

This is the orchestration layer: it knows the run folder (:class:`~hpsh_tf2.layout.RunLayout`)
and wires the libraries below it (data, features, training, evaluation, export). Each step
takes a resolved :class:`~hpsh_tf2.config.Config` and writes its outputs into the run folder
(see docs/reference/outputs.md), holding the folder's lock (:mod:`hpsh_tf2.lock`) so that two
commands never write one folder at once. ``config.yaml`` is saved once the data are validated
(after the scan and split), so a refused command leaves the previous one in place.

Every artifact records the fingerprint of the inputs that made it, next to it:
``model/fingerprint.json`` (the training keys of the config, the split, a features file's
stamp), ``eval/fingerprint.json`` (the model's fingerprint and the eval keys) and the export
manifest's ``provenance``. :func:`run` rebuilds whatever does not match the config; ``evaluate``
and ``export`` refuse a model trained with other settings, naming every differing key.
``cli.py`` is a thin argument parser over these functions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from hpsh_tf2.atomic import write_json_atomic
from hpsh_tf2.config import Config, config_to_dict, fingerprint, load_config, save_config
from hpsh_tf2.console import keras_verbosity
from hpsh_tf2.data.demo import make_demo_dataset
from hpsh_tf2.data.formats import ReadRequest
from hpsh_tf2.data.images import BandReading
from hpsh_tf2.data.split import SUBSET_NAMES, prepare_split, split_table
from hpsh_tf2.dataset import Prepared, data_format, read_data, scan_from_features
from hpsh_tf2.encode import ScoreEncoder, SignatureEncoder
from hpsh_tf2.errors import HPSHError, ModelMismatchError
from hpsh_tf2.evaluation.code_health import degenerate_warning, format_code_health
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
from hpsh_tf2.lock import workdir_lock
from hpsh_tf2.models.backbone import backbone_from_config
from hpsh_tf2.models.head import build_image_hash_model
from hpsh_tf2.ops.codes import np_binarize, np_pack_codes
from hpsh_tf2.serving import format_neighbours, load_exported, query_images, request_image_bytes
from hpsh_tf2.training import TrainResult, fit_hash_model, training_keys
from hpsh_tf2.training.distributed import (
    broadcast_from_chief,
    is_chief,
    lock_identity,
    start_multi_worker,
)

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
    return layout


def _locked(verb: Callable) -> Callable:
    """Runs a writing verb while holding the run folder's lock (re-entrant: run -> train)."""

    @functools.wraps(verb)
    def wrapper(config: Config, *args, **kwargs):
        cluster = lock_identity(config)  # multi_worker: the cluster's workers share the lock
        with workdir_lock(config.workdir, cluster=cluster):
            return verb(config, *args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- fingerprints


def _file_digest(path: Path) -> str:
    if not path.is_file():
        return "missing"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _model_inputs(config: Config, layout: RunLayout) -> dict[str, Any]:
    """What the trained weights depend on: the training keys of the config, the split and (for
    a bring-your-own features file) the file's size and modification time."""
    inputs = training_keys(config)
    inputs["data.split_file"] = _file_digest(layout.split)
    if config.data.features:
        inputs["data.features_file"] = _file_stamp(Path(config.data.features))
    return inputs


def _model_stamp(config: Config, layout: RunLayout) -> str:
    return _file_stamp(layout.selected_model(config.train.mode))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record_model(config: Config, layout: RunLayout, result: TrainResult) -> None:
    inputs = _model_inputs(config, layout)
    write_json_atomic(
        layout.model_fingerprint,
        {
            "fingerprint": fingerprint(inputs, length=16),
            "inputs": inputs,
            "model": _model_stamp(config, layout),
            "selected_epoch": result.selected_epoch,
            "selection": result.selection,
        },
    )


def _model_mismatch(config: Config, layout: RunLayout) -> list[str]:
    """``key: trained X, requested Y`` for every input that differs from the recorded one."""
    recorded = _read_json(layout.model_fingerprint).get("inputs")
    if not isinstance(recorded, dict):
        return ["fingerprint: none recorded (model/fingerprint.json is missing or unreadable)"]
    current = json.loads(json.dumps(_model_inputs(config, layout)))  # tuples -> lists
    missing = "(not set)"
    return [
        f"{key}: trained {recorded.get(key, missing)!r}, requested {current.get(key, missing)!r}"
        for key in sorted(set(recorded) | set(current))
        if recorded.get(key, missing) != current.get(key, missing)
    ]


def _model_up_to_date(config: Config, layout: RunLayout) -> bool:
    record = _read_json(layout.model_fingerprint)
    return (
        layout.selected_model(config.train.mode).is_file()
        and not _model_mismatch(config, layout)
        and record.get("model") == _model_stamp(config, layout)
    )


def _require_model(config: Config, layout: RunLayout) -> str:
    """The model's fingerprint (its recorded inputs and its file); refuses a model made with
    other settings.

    Raises:
        WorkflowError: No trained model in the run folder.
        ModelMismatchError: The model was trained with settings other than ``config``'s (every
            differing key is named with the trained and the requested value).
    """
    path = layout.selected_model(config.train.mode)
    if not path.is_file():
        raise WorkflowError(f"no trained model at {path}; run train first")
    differences = _model_mismatch(config, layout)
    if differences:
        raise ModelMismatchError(
            f"the model in {layout.model_dir} was trained with other settings than this config: "
            + "; ".join(differences)
            + ". Run train (or run) with this config to retrain, or use the config it was "
            "trained with"
        )
    record = _read_json(layout.model_fingerprint)
    stamp = _model_stamp(config, layout)
    if record.get("model") != stamp:
        logger.warning("%s changed since train recorded it; using it as it is", path)
    return fingerprint({"inputs": record["fingerprint"], "model": stamp}, length=16)


def _eval_fingerprint(config: Config, model_fingerprint: str, saved_model) -> dict:
    return {
        "model": model_fingerprint,
        "eval": config_to_dict(config)["eval"],
        "protocol_split": _file_digest(RunLayout(config.workdir).split),
        "saved_model": None if saved_model is None else str(saved_model),
    }


def _export_provenance(config: Config, model_fingerprint: str) -> dict:
    raw = config_to_dict(config)
    return {"model": model_fingerprint, "export": raw["export"], "name": raw["name"]}


# --------------------------------------------------------------------------- prepare


@_locked
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
    elif data.root or data.manifest:
        scan, hit = read_data(
            data_format(data.format, data.manifest),
            ReadRequest(
                root=data.root,
                manifest=data.manifest,
                on_bad_image=data.on_bad_image,
                verify=data.verify_images,
                cache_dir=str(layout.chips),
                reading=BandReading.from_config(config),
            ),
            layout.scan_cache,
        )
        if hit:
            logger.info("re-used the scan of %s (files unchanged)", scan.root)
    else:
        raise WorkflowError(
            "no data: set data.root (a folder of class folders), data.manifest (a .csv/.jsonl "
            "list of images) or data.features (a .npz), e.g. --set data.root=/path/to/AID"
        )
    split_fractions = data.split
    split, created = prepare_split(
        scan,
        layout.split,
        train=split_fractions.train,
        val=split_fractions.val,
        test=split_fractions.test,
        seed=data.seed,
        method=split_fractions.method,
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
    save_config(config, layout.config)  # only now: the config and its data are usable
    return Prepared(scan, split, created, features)


# --------------------------------------------------------------------------- extract


@_locked
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
        content_hash=config.data.content_hash,
        reading=BandReading.from_config(config),
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


@_locked
def train(
    config: Config, *, prepared: Prepared | None = None, verbose: int | None = None
) -> TrainResult:
    """Trains the hash model (features or end-to-end mode); writes ``model/`` and records the
    inputs it was trained with in ``model/fingerprint.json``.

    ``verbose`` is Keras' fit verbosity; ``None``: a live bar on a terminal, one plain line per
    epoch otherwise (:func:`hpsh_tf2.console.keras_verbosity`).

    See :func:`hpsh_tf2.training.fit_hash_model`.

    Raises:
        RunFailedError: Training diverged (NaN loss); the previous model is left in place.
    """
    strategy = start_multi_worker(config)  # multi_worker: before TensorFlow runs anything
    prepared = prepared or prepare(config, echo=logger.info)
    features = _mode_features(config, prepared)
    layout = RunLayout(config.workdir)
    result = fit_hash_model(
        config,
        train_inputs=prepared.inputs("train", features),
        val_inputs=prepared.inputs("val", features),
        layout=layout,
        verbose=keras_verbosity() if verbose is None else verbose,
        class_names=prepared.class_names,
    )
    if strategy is None or is_chief(strategy):  # only the chief writes model/
        _record_model(config, layout, result)
    return result


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
        reading=BandReading.from_config(config),
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
        reading=BandReading.from_config(config),
    )
    return lambda name: encoder(prepared.inputs(name))


def _encoded(prepared: Prepared, names, score) -> EncodedSet:
    scores = np.concatenate([score(name) for name in names])
    labels = np.concatenate([prepared.subset_labels(name) for name in names])
    paths = tuple(p for name in names for p in prepared.subset_paths(name))
    return EncodedSet(np_binarize(scores), labels, paths)


@_locked
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

    Raises:
        ModelMismatchError: The run folder's model was trained with other settings.
    """
    layout = RunLayout(config.workdir)
    model_fp = "saved_model" if saved_model is not None else _require_model(config, layout)
    prepared = prepared or prepare(config, echo=logger.info)
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
            reading=BandReading.from_config(config),
        )
    write_json_atomic(layout.eval_fingerprint, _eval_fingerprint(config, model_fp, saved_model))
    echo(format_report_table(report))
    _echo_code_health(report, echo, warn=True)
    echo(f"wrote {layout.report} and {layout.codes}")
    return report


def _echo_code_health(report: dict, echo: Echo, *, warn: bool, indent: str = "") -> None:
    """The code-health line of a report and, with ``warn``, the one
    warning line when the codes are degenerate. Reports written before it have none."""
    health = report.get("code_health")
    if not health:
        return
    echo(indent + format_code_health(health))
    warning = degenerate_warning(health) if warn else None
    if warning:
        echo(warning)


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


@_locked
def export(config: Config, *, prepared: Prepared | None = None, echo: Echo = print) -> Path:
    """Exports the trained model as a versioned SavedModel for TF Serving.

    The SavedModel maps image bytes to codes and embeds a retrieval database: the codes of
    ``export.database`` (``all`` split images, ``train`` only, or ``none``).

    Returns:
        The new version folder ``export/<name>/<version>`` of the run folder.

    Raises:
        ModelMismatchError: The model was trained with another image size, backbone, weights,
            code length or any other training key than the config's (each one named).
    """
    layout = RunLayout(config.workdir)
    if config.data.features:
        raise WorkflowError(
            "export needs the image model; a run on data.features has no backbone to export"
        )
    model_fp = _require_model(config, layout)
    prepared = prepared or prepare(config, echo=logger.info)
    image_model = _image_model(config, layout)
    database = _retrieval_database(config, prepared)
    samples = prepared.subset_paths("train")[: config.export.warmup_requests]
    reading = BandReading.from_config(config)
    if config.model.input_bands == 3:
        warmup = [request_image_bytes(prepared.root / p, reading) for p in samples]  # TIFF -> PNG
    else:  # a multi-band export warms up encode_pixels with a synthetic tile
        warmup = [b""] if samples else []
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
        max_pixels=config.export.max_pixels,
        provenance=_export_provenance(config, model_fp),
        input_bands=config.model.input_bands,
        bands=config.data.bands,
        band_scale=config.data.band_scale,
    )
    echo(summarize_export(read_manifest(version_dir), version_dir))
    return version_dir


# --------------------------------------------------------------------------- run


def _file_stamp(path: Path) -> str:
    if not path.exists():
        return "missing"
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _latest_export(layout: RunLayout, config: Config) -> tuple[Path | None, dict]:
    """The highest version folder of the config's export, and its manifest."""
    base = layout.export_model(config.export.name or config.name)
    versions = (
        [p for p in base.glob("*") if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
    )
    if not versions:
        return None, {}
    latest = max(versions, key=lambda p: int(p.name))
    try:
        return latest, read_manifest(latest)
    except (OSError, ValueError):
        return latest, {}


@_locked
def run(config: Config, *, echo: Echo = print) -> dict:
    """The whole job: prepare, extract (features mode), train, evaluate, export.

    A step is skipped when its artifact's recorded fingerprint matches the config (the model's
    training inputs and file, the report's model and eval keys, the export's model and export
    keys); anything else is rebuilt, and the summary says which and why.
    Returns a summary (mAP@k, bits, export path, which steps ran).

    With ``train.strategy=multi_worker`` every worker runs the same ``run``: they train together
    (or all skip training when the chief's model is up to date: the chief decides), then the
    chief alone evaluates and exports, and the other workers return a summary naming the
    chief.
    """
    strategy = start_multi_worker(config)  # multi_worker: before TensorFlow runs anything
    layout = _start(config)
    ran: dict[str, str] = {}
    prepared = prepare(config, echo=echo)

    up_to_date = _model_up_to_date(config, layout)
    if strategy is not None:  # every worker must take the chief's decision (collective ops)
        (decision,) = broadcast_from_chief(strategy, [np.int32(up_to_date)])
        up_to_date = bool(decision)
    if up_to_date:
        ran["train"] = "up to date"
    else:
        why = "; ".join(_model_mismatch(config, layout)[:3]) or "model file changed or missing"
        logger.info("train: rebuilding (%s)", why)
        result = train(config, prepared=prepared)
        ran["train"] = f"trained; kept epoch {result.selected_epoch} ({result.selection})"
    if strategy is not None and not is_chief(strategy):
        return _worker_summary(config, ran, echo)
    model_fp = _require_model(config, layout)

    expected = json.loads(json.dumps(_eval_fingerprint(config, model_fp, None)))
    if layout.report.is_file() and _read_json(layout.eval_fingerprint) == expected:
        report = json.loads(layout.report.read_text())
        ran["evaluate"] = "up to date"
    else:
        report = evaluate(config, prepared=prepared, echo=echo)
        ran["evaluate"] = "evaluated"

    export_path: Path | None = None
    latest, manifest = _latest_export(layout, config)
    provenance = json.loads(json.dumps(_export_provenance(config, model_fp)))
    if prepared.features is not None:
        ran["export"] = "skipped: a data.features run has no image model to export"
    elif latest is not None and manifest.get("provenance") == provenance:
        export_path = latest
        ran["export"] = "up to date"
    else:
        export_path = export(config, prepared=prepared, echo=echo)
        ran["export"] = "exported"
    return _summary(config, report, export_path, ran, echo)


def _worker_summary(config: Config, ran: dict, echo: Echo) -> dict:
    """A non-chief worker's summary: it trained; the chief evaluates and exports."""
    ran["evaluate"] = ran["export"] = "on the chief"
    echo("")
    echo("== summary (not the chief) ==")
    for step, status in ran.items():
        echo(f"  {step:<9} {status}")
    echo("  the chief writes the model, the report and the SavedModel to its output.workdir")
    k = config.eval.k
    return {
        f"map@{k}": None,
        "bits": config.model.bits,
        "protocol": config.eval.protocol,
        "export": None,
        "steps": ran,
    }


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
    # evaluate() already warned about degenerate codes when it ran in this command
    _echo_code_health(report, echo, warn=ran.get("evaluate") != "evaluated", indent="  ")
    echo(f"  SavedModel: {export_path or '-'}")
    return summary


# --------------------------------------------------------------------------- demo

DEMO_OVERRIDES = (
    "name=demo",
    "model.backbone=inception_v3",
    "model.weights=none",
    "model.image_size=75",
    "model.bits=16",
    "model.input_norm=standardize",
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
    with workdir_lock(config.workdir):
        root = make_demo_dataset(config.data.root)
        echo(f"demo dataset: {root}")
        summary = run(config, echo=echo)
    prepared = prepare(config, echo=lambda _: None)
    k = config.eval.k
    weights = "random" if config.model.weights == "none" else config.model.weights
    norms = {"standardize": ", standardised", "l2": ", L2-normalised"}
    norm = norms.get(config.model.input_norm, "")
    echo(
        f"\ndemo: a {config.model.bits}-bit hash head trained on frozen {config.model.backbone} "
        f"features ({config.model.image_size} px, {weights} weights{norm}) of "
        f"{len(prepared.class_names)} synthetic texture classes "
        f"({len(prepared.subset_paths('train'))} training images); test mAP@{k} "
        f"{summary[f'map@{k}']:.3f} over {len(prepared.subset_paths('test'))} queries"
    )
    query = prepared.root / prepared.subset_paths("test")[0]
    neighbours = query_images(Path(summary["export"]).parent, [str(query)], top=5)[0]
    echo(f"\nquery {query} -> top 5 via the SavedModel's retrieve signature:")
    echo(format_neighbours(neighbours))
    summary["query"] = str(query)
    return summary
