"""Evaluation as a library: codes in, report (and its files and figures) out.

Nothing here knows about runs or models: :func:`evaluate_codes` takes the query and database
codes of an :class:`EncodedSet` each and the ``eval`` section of a config, searches and returns
the report; :func:`save_evaluation` and :func:`save_figures` write it where the caller says.
The run's orchestration (which model, which subsets, which folder) is
:func:`hpsh_tf2.workflow.evaluate`.

Protocols (``eval.protocol``, :func:`protocol_subsets`):

- ``paper``: queries = test split, database = test split minus the query itself (the original
  HPSH / MHCLN protocol, on our leak-free split).
- ``standard``: queries = test split, database = train + val splits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.atomic import save_npz_atomic, write_json_atomic
from hpsh_tf2.config import EvalConfig
from hpsh_tf2.data.images import BandReading, load_image_bands
from hpsh_tf2.errors import HPSHError
from hpsh_tf2.evaluation.plots import save_code_projection, save_pr_curve, save_retrieval_grid
from hpsh_tf2.evaluation.report import compute_report
from hpsh_tf2.evaluation.search import SearchResult

__all__ = [
    "EncodedSet",
    "EvaluationError",
    "evaluate_codes",
    "protocol_subsets",
    "save_evaluation",
    "save_figures",
]

logger = logging.getLogger(__name__)


class EvaluationError(HPSHError, ValueError):
    """The codes cannot be evaluated as asked (too few items for the protocol or ``k``)."""


def protocol_subsets(protocol: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(query subsets, database subsets, exclude_self) of an evaluation protocol.

    Raises:
        EvaluationError: For an unknown protocol.
    """
    if protocol == "paper":
        return ("test",), ("test",), True
    if protocol == "standard":
        return ("test",), ("train", "val"), False
    raise EvaluationError(f"Received: eval.protocol={protocol!r}; expected 'paper' or 'standard'")


@dataclass(frozen=True)
class EncodedSet:
    """Codes of one side of the search (queries or database) with their labels and paths.

    Attributes:
        codes: uint8 0/1 ``[N, bits]``.
        labels: int ``[N]``, or multi-hot ``[N, C]``.
        paths: ``N`` paths relative to the dataset root (used by figures and ``codes.npz``).
    """

    codes: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.codes)


def _check_sizes(queries: EncodedSet, database: EncodedSet, config: EvalConfig, exclude_self):
    if len(queries) == 0 or len(database) == 0:
        raise EvaluationError(
            f"protocol {config.protocol!r} needs queries and a database; got "
            f"{len(queries)} queries and {len(database)} database items"
        )
    available = len(database) - (1 if exclude_self else 0)
    if available < config.k + 1:
        raise EvaluationError(
            f"eval.k={config.k} needs at least {config.k + 1} database items (the original "
            f"metric scores ranks 2..k+1); the {config.protocol!r} database has {available}"
        )


def evaluate_codes(
    *,
    queries: EncodedSet,
    database: EncodedSet,
    exclude_self: bool,
    config: EvalConfig,
) -> tuple[dict[str, Any], SearchResult]:
    """Searches the database for every query and computes the retrieval report.

    Args:
        queries: Query codes, labels and paths.
        database: Database codes, labels and paths (``queries`` itself with ``exclude_self``).
        exclude_self: Query ``i`` is database item ``i`` and is left out of its own ranking.
        config: The ``eval`` section (``k``, ``radius``, ``backend``, ``protocol``, ``ties``).

    Returns:
        ``(report, search_result)``; see :func:`hpsh_tf2.evaluation.report.compute_report`.

    Raises:
        EvaluationError: If a side is empty or the database is smaller than ``k + 1``.
    """
    _check_sizes(queries, database, config, exclude_self)
    report, result = compute_report(
        query_codes=queries.codes,
        query_labels=queries.labels,
        db_codes=database.codes,
        db_labels=database.labels,
        k=config.k,
        exclude_self=exclude_self,
        radius=config.radius,
        backend=config.backend,
        ties=config.ties,
    )
    report.update({"protocol": config.protocol, "k": config.k})
    return report, result


def save_evaluation(
    report: dict[str, Any],
    *,
    queries: EncodedSet,
    database: EncodedSet,
    class_names: Sequence[str],
    report_path: str | os.PathLike[str],
    codes_path: str | os.PathLike[str],
) -> None:
    """Writes the report (JSON) and the codes with labels and paths (``.npz``), atomically."""
    write_json_atomic(report_path, report)
    save_npz_atomic(
        codes_path,
        query_codes=queries.codes.astype(np.uint8),
        db_codes=database.codes.astype(np.uint8),
        query_labels=queries.labels,
        db_labels=database.labels,
        query_paths=np.asarray(queries.paths),
        db_paths=np.asarray(database.paths),
        class_names=np.asarray(class_names),
    )


def _label(row: np.ndarray) -> Any:
    """One item's label for the figures: a class index, or its multi-hot row."""
    return int(row) if np.ndim(row) == 0 else np.asarray(row)


def _shown(path: Path, reading: BandReading | None) -> np.ndarray:
    """uint8 RGB of an image as the model reads it: its first three bands (one band: grey)."""
    pixels = load_image_bands(path, reading)
    if pixels.shape[-1] < 3:
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    return pixels[..., :3]


def save_figures(
    out_dir: str | os.PathLike[str],
    *,
    report: dict[str, Any],
    result: SearchResult,
    queries: EncodedSet,
    database: EncodedSet,
    class_names: Sequence[str],
    config: EvalConfig,
    image_root: str | os.PathLike[str] | None,
    reading: BandReading | None = None,
) -> list[Path]:
    """Precision-recall curve, 2-D code embedding and retrieval grids (PNG).

    A grid is drawn for every ``config.interval``-th query, at most ``config.max_grids``, and
    only when ``image_root`` is given (bring-your-own features have no images). GeoTIFF images
    are drawn as the model reads them (``reading``), from their first three bands.

    Returns:
        The files written.
    """
    out = Path(out_dir)
    written = []
    curve = report.get("pr_curve") or {}
    if curve.get("precision") and curve.get("recall"):
        path = out / "pr_curve.png"
        save_pr_curve(path, precision=curve["precision"], recall=curve["recall"])
        written.append(path)
    path = out / "code_embedding.png"
    save_code_projection(path, codes=queries.codes, labels=queries.labels, class_names=class_names)
    written.append(path)
    if image_root is None:
        return written
    root, k = Path(image_root), config.k
    for q in list(range(0, len(queries), config.interval))[: config.max_grids]:
        ids = result.indices[q, :k]
        path = out / f"grid_{q:05d}.png"
        save_retrieval_grid(
            path,
            query_image=_shown(root / queries.paths[q], reading),
            retrieved_images=[_shown(root / database.paths[i], reading) for i in ids],
            query_label=_label(queries.labels[q]),
            retrieved_labels=[_label(database.labels[i]) for i in ids],
            class_names=class_names,
            distances=[int(d) for d in result.distances[q, :k]],
        )
        written.append(path)
    return written
