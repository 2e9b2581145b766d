"""Evaluation of a run: model -> codes -> search -> metrics -> report, codes and figures.

Protocols (``eval.protocol``):

- ``paper``: queries = test split, database = test split minus the query itself (the original
  HPSH / MHCLN protocol, on our leak-free split).
- ``standard``: queries = test split, database = train + val splits.

Outputs under ``<workdir>/eval/``: ``report.json``, ``codes.npz`` (rows in ranking order) and,
with ``eval.figures``, ``grid_<query>.png``, ``pr_curve.png`` and ``code_embedding.png``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hpsh_tf2.atomic import save_npz_atomic, write_json_atomic
from hpsh_tf2.config import Config
from hpsh_tf2.evaluation.report import compute_report, format_report_table
from hpsh_tf2.ops.codes import np_binarize

if TYPE_CHECKING:
    from hpsh_tf2.workflow import Prepared

__all__ = ["EncodedSet", "evaluate_run", "protocol_subsets", "score_subsets"]

logger = logging.getLogger(__name__)


def protocol_subsets(protocol: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(query subsets, database subsets, exclude_self) of an evaluation protocol."""
    if protocol == "paper":
        return ("test",), ("test",), True
    if protocol == "standard":
        return ("test",), ("train", "val"), False
    raise ValueError(f"Received: eval.protocol={protocol!r}; expected 'paper' or 'standard'")


def _model_scorer(config: Config, prepared: Prepared) -> Callable[[str], np.ndarray]:
    """Scores of one subset from the trained Keras model in ``<workdir>/model``."""
    import keras

    from hpsh_tf2.train import ScoreEncoder
    from hpsh_tf2.workflow import _inputs, extract

    model_dir = config.workdir / "model"
    if config.train.mode == "features":
        path = model_dir / "hash_model.keras"
        features = extract(config, prepared=prepared, progress=False)
    else:
        path = model_dir / "image_model.keras"
        features = None
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}; run train first")
    encode = ScoreEncoder(
        keras.saving.load_model(path),
        batch_size=config.train.eval_batch_size,
        image_size=config.model.image_size,
        backbone=config.model.backbone,
    )
    return lambda name: encode(_inputs(prepared, name, features))


def _saved_model_scorer(
    config: Config, prepared: Prepared, saved_model: str | os.PathLike
) -> Callable[[str], np.ndarray]:
    """Scores of one subset from an exported SavedModel's ``encode_images`` signature."""
    from hpsh_tf2.data.pipeline import image_dataset
    from hpsh_tf2.serving import load_exported

    loaded = load_exported(saved_model)
    encode = loaded.signatures["encode_images"]

    def score(name: str) -> np.ndarray:
        paths = [str(prepared.root / p) for p in prepared.subset_paths(name)]
        if not paths:
            return np.zeros((0, config.model.bits), np.float32)
        batches = image_dataset(
            paths, image_size=config.model.image_size, batch_size=config.train.eval_batch_size
        )
        return np.concatenate([encode(images=batch)["scores"].numpy() for batch in batches])

    return score


def score_subsets(
    config: Config, prepared: Prepared, saved_model: str | os.PathLike | None = None
) -> Callable[[str], np.ndarray]:
    """A function returning the sigmoid scores of a named subset."""
    if saved_model is not None:
        if prepared.features is not None:
            raise ValueError("evaluating a SavedModel needs images; data.features has none")
        return _saved_model_scorer(config, prepared, saved_model)
    return _model_scorer(config, prepared)


@dataclass(frozen=True)
class EncodedSet:
    """Codes of one side of the search (queries or database) with their labels and paths."""

    codes: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.codes)


def _encode(prepared: Prepared, names, score) -> EncodedSet:
    scores = np.concatenate([score(name) for name in names])
    labels = np.concatenate([prepared.subset_labels(name) for name in names])
    paths = tuple(p for name in names for p in prepared.subset_paths(name))
    return EncodedSet(np_binarize(scores), labels, paths)


def evaluate_run(
    config: Config,
    *,
    prepared: Prepared,
    saved_model: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Evaluates retrieval and writes ``<workdir>/eval``.

    Args:
        config: The resolved config (``eval.*`` keys).
        prepared: The dataset and split (from :func:`hpsh_tf2.workflow.prepare`).
        saved_model: Evaluate an exported SavedModel (a model or version folder) instead of
            the Keras model in ``<workdir>/model``.
        echo: Where the summary table is printed.

    Returns:
        The report dictionary (also written to ``eval/report.json``).
    """
    query_names, db_names, exclude_self = protocol_subsets(config.eval.protocol)
    score = score_subsets(config, prepared, saved_model)
    queries = _encode(prepared, query_names, score)
    database = queries if exclude_self else _encode(prepared, db_names, score)
    if len(queries) == 0 or len(database) == 0:
        raise ValueError(
            f"protocol {config.eval.protocol!r} needs queries and a database; got "
            f"{len(queries)} queries and {len(database)} database items"
        )
    k = config.eval.k
    available = len(database) - (1 if exclude_self else 0)
    if available < k + 1:
        raise ValueError(
            f"eval.k={k} needs at least {k + 1} database items (seed metric scores ranks "
            f"2..k+1); the {config.eval.protocol!r} database has {available}"
        )
    report, result = compute_report(
        query_codes=queries.codes,
        query_labels=queries.labels,
        db_codes=database.codes,
        db_labels=database.labels,
        k=k,
        exclude_self=exclude_self,
        radius=config.eval.radius,
        backend=config.eval.backend,
    )
    report.update(
        {
            "protocol": config.eval.protocol,
            "k": k,
            "model": str(saved_model) if saved_model else str(config.workdir / "model"),
            "queries": list(query_names),
            "database": list(db_names),
        }
    )
    out = config.workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    save_npz_atomic(
        out / "codes.npz",
        query_codes=queries.codes.astype(np.uint8),
        db_codes=database.codes.astype(np.uint8),
        query_labels=queries.labels,
        db_labels=database.labels,
        query_paths=np.asarray(queries.paths),
        db_paths=np.asarray(database.paths),
        class_names=np.asarray(prepared.split.class_names),
    )
    if config.eval.figures:
        _figures(config, prepared, out, report, result, queries, database)
    echo(format_report_table(report))
    echo(f"wrote {out / 'report.json'} and {out / 'codes.npz'}")
    return report


def _figures(
    config: Config,
    prepared: Prepared,
    out: Path,
    report: dict,
    result,
    queries: EncodedSet,
    database: EncodedSet,
) -> None:
    """Retrieval grids, precision-recall curve and the 2-D code embedding."""
    from hpsh_tf2.evaluation.plots import save_code_embedding, save_pr_curve, save_retrieval_grid

    class_names = prepared.split.class_names
    curve = report.get("pr_curve") or {}
    if curve.get("precision") and curve.get("recall"):
        save_pr_curve(out / "pr_curve.png", precision=curve["precision"], recall=curve["recall"])
    save_code_embedding(
        out / "code_embedding.png",
        codes=queries.codes,
        labels=queries.labels,
        class_names=class_names,
    )
    if prepared.features is not None:
        return  # no images to draw
    from hpsh_tf2.data.images import load_image_rgb

    k = config.eval.k
    picks = list(range(0, len(queries), config.eval.interval))[: config.eval.max_grids]
    for q in picks:
        ids = result.indices[q, :k]
        save_retrieval_grid(
            out / f"grid_{q:05d}.png",
            query_image=load_image_rgb(prepared.root / queries.paths[q]),
            retrieved_images=[load_image_rgb(prepared.root / database.paths[i]) for i in ids],
            query_label=int(queries.labels[q]),
            retrieved_labels=[int(database.labels[i]) for i in ids],
            class_names=class_names,
            distances=[int(d) for d in result.distances[q, :k]],
        )
