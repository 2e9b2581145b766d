"""The results table: code lengths x samplers x split seeds, trained and evaluated in one go.

:func:`results_table` runs a grid of cells from one config. Backbone features are computed (or
loaded) once for every image; each cell then makes its split (``data.seed``), trains the hash
head in features mode, and evaluates with the config's protocol. A cell's finished row is
written atomically, so a rerun (also after ``kill -9``) skips finished cells and resumes an
interrupted one from its epoch checkpoints. The float-feature cosine kNN on the same queries is
the reference row.

Outputs (``table/`` of the run folder): ``results.csv`` (one row per cell), ``results.md`` (mean
+- std over seeds per code length and sampler) and ``results.png`` (mAP vs bits, one line per
sampler, error bars).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpsh_tf2.atomic import write_json_atomic, write_text_atomic
from hpsh_tf2.config import Config
from hpsh_tf2.data.split import prepare_split
from hpsh_tf2.dataset import Prepared, scan_from_features
from hpsh_tf2.errors import HPSHError
from hpsh_tf2.evaluation import metrics, relevance
from hpsh_tf2.evaluation.evaluate import protocol_subsets
from hpsh_tf2.evaluation.plots import save_metric_vs_bits
from hpsh_tf2.features import FeatureSet, extract_features
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.lock import workdir_lock
from hpsh_tf2.workflow import evaluate, prepare, train

__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_SAMPLERS",
    "Cell",
    "TableError",
    "knn_metrics",
    "knn_reference",
    "results_table",
]

logger = logging.getLogger(__name__)
DEFAULT_BITS = (16, 32, 64)
DEFAULT_SAMPLERS = ("hpsh", "random", "semihard")
Echo = Callable[[str], None]
_GRADED_KEYS = ("ndcg@{k}", "acg@{k}", "wap@{k}")


class TableError(HPSHError, ValueError):
    """The grid cannot be run as asked."""


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        bits: Code length.
        sampler: ``sampler.mode``.
        seed: Split seed (``data.seed``).
    """

    bits: int
    sampler: str
    seed: int

    @property
    def name(self) -> str:
        """Folder name of the cell."""
        return f"bits{self.bits}-{self.sampler}-seed{self.seed}"

    def overrides(self, workdir: Path) -> list[str]:
        """The dotted-key overrides that make the cell's config."""
        return [
            f"model.bits={self.bits}",
            f"sampler.mode={self.sampler}",
            f"data.seed={self.seed}",
            "train.mode=features",
            "eval.figures=false",
            f"output.workdir={workdir}",
        ]


def _all_features(config: Config, prepared: Prepared, layout: RunLayout) -> FeatureSet:
    """Every image's features once (the features file itself with ``data.features``)."""
    if prepared.features is not None:
        return prepared.features
    scan = prepared.scan
    rows = extract_features(
        paths=scan.paths,
        root=scan.root,
        out_dir=layout.table_features,
        backbone=config.model.backbone,
        weights=config.model.weights,
        image_size=config.model.image_size,
        seed=config.model.init_seed,
        batch_size=config.train.extract_batch_size,
    )
    return FeatureSet(
        features=rows, labels=scan.labels, paths=scan.paths, class_names=scan.class_names
    )


def _cell_prepared(config: Config, features: FeatureSet, cell_layout: RunLayout) -> Prepared:
    scan = scan_from_features(features, cell_layout.workdir / "features.npz")
    fractions = config.data.split
    split, created = prepare_split(
        scan,
        cell_layout.split,
        train=fractions.train,
        val=fractions.val,
        test=fractions.test,
        seed=config.data.seed,
        method=fractions.method,
    )
    return Prepared(scan, split, created, features)


def knn_reference(prepared: Prepared, *, protocol: str, k: int) -> dict[str, float]:
    """Float-feature cosine kNN on the protocol's queries: mAP@k, MAP@R, P@k, R@k.

    Ranked by cosine similarity, ties by database index; the query itself is left out in the
    paper protocol. Relevance is :mod:`hpsh_tf2.evaluation.relevance` (multi-hot labels: at
    least one shared label), and multi-label runs also get NDCG@k, ACG@k and WAP@k.
    """
    query_names, db_names, exclude_self = protocol_subsets(protocol)
    rows = prepared.feature_rows()

    def side(names):
        x = np.concatenate([rows[n] for n in names]).astype(np.float64)
        y = np.concatenate([prepared.subset_labels(n) for n in names])
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), y

    query, query_labels = side(query_names)
    database, db_labels = (query, query_labels) if exclude_self else side(db_names)
    return knn_metrics(query, query_labels, database, db_labels, exclude_self=exclude_self, k=k)


def knn_metrics(
    query: np.ndarray,
    query_labels: np.ndarray,
    database: np.ndarray,
    db_labels: np.ndarray,
    *,
    exclude_self: bool,
    k: int,
) -> dict[str, float]:
    """The metrics of :func:`knn_reference` for unit-length float rows (cosine = dot product).

    With ``exclude_self`` query ``i`` is database item ``i`` and is not ranked.
    """
    similarity = query @ database.T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")
    if exclude_self:
        order = order[:, :-1]  # the query itself sorts last
    retrieved = db_labels[order]
    num_relevant = relevance.num_relevant(query_labels, db_labels, exclude_self=exclude_self)
    values = {
        f"map@{k}": metrics.map_at_k(query_labels=query_labels, retrieved_labels=retrieved, k=k),
        "map@r": metrics.map_at_r(
            query_labels=query_labels, retrieved_labels=retrieved, num_relevant=num_relevant
        ),
        f"precision@{k}": metrics.precision_at_k(
            query_labels=query_labels, retrieved_labels=retrieved, k=k
        ),
        f"recall@{k}": metrics.recall_at_k(
            query_labels=query_labels, retrieved_labels=retrieved, k=k, num_relevant=num_relevant
        ),
    }
    if relevance.is_multi_hot(query_labels):
        values.update(_graded_reference(query_labels, db_labels, retrieved, exclude_self, k))
    return values


def _graded_reference(query_labels, db_labels, retrieved, exclude_self: bool, k: int) -> dict:
    """NDCG@k, ACG@k and WAP@k of the kNN ranking (multi-label)."""
    shared = relevance.shared(query_labels, db_labels)
    if exclude_self:
        np.fill_diagonal(shared, -1)  # the query itself is not ranked
    width = int(shared.max(initial=0)) + 2
    rows = np.arange(shared.shape[0])[:, None] * width + shared + 1
    levels = np.bincount(rows.ravel(), minlength=shared.shape[0] * width).reshape(-1, width)[:, 1:]
    common = {"query_labels": query_labels, "retrieved_labels": retrieved[:, :k], "k": k}
    return {
        f"ndcg@{k}": metrics.ndcg_at_k(**common, level_counts=levels),
        f"acg@{k}": metrics.acg_at_k(**common),
        f"wap@{k}": metrics.wap_at_k(**common),
    }


def report_columns(report: dict, k: int) -> dict[str, float]:
    """The metric columns of a cell's row: mAP@k (also in index order), MAP@R, P@k, R@k, and
    for multi-label reports NDCG@k, ACG@k and WAP@k."""
    columns = {
        f"map@{k}": report[f"map@{k}"],
        f"map@{k}_index": report.get(f"map@{k}_index", report[f"map@{k}"]),
        "map@r": report["map@r"],
        f"precision@{k}": report[f"precision@{k}"],
        f"recall@{k}": report[f"recall@{k}"],
    }
    graded = (key.format(k=k) for key in _GRADED_KEYS)
    columns.update({name: report[name] for name in graded if name in report})
    return columns


def _run_cell(config: Config, cell: Cell, features: FeatureSet, layout: RunLayout) -> dict:
    cell_layout = RunLayout(layout.table_cell(cell.name))
    cell_config = config.replace(cell.overrides(cell_layout.workdir))
    cell_layout.workdir.mkdir(parents=True, exist_ok=True)
    prepared = _cell_prepared(cell_config, features, cell_layout)
    start = time.perf_counter()
    result = train(cell_config, prepared=prepared, verbose=0)
    trained = time.perf_counter()
    report = evaluate(cell_config, prepared=prepared, echo=lambda _: None)
    k = config.eval.k
    row = {
        "bits": cell.bits,
        "sampler": cell.sampler,
        "seed": cell.seed,
        **report_columns(report, k),
        "best_val_map": result.best_val_map,
        "selected_epoch": result.selected_epoch,
        "train_seconds": round(trained - start, 2),
        "eval_seconds": round(time.perf_counter() - trained, 2),
    }
    reference = knn_reference(prepared, protocol=config.eval.protocol, k=k)
    row.update({f"knn_{key}": value for key, value in reference.items()})
    return row


def _grid(bits: Sequence[int], samplers: Sequence[str], seeds: Sequence[int]) -> list[Cell]:
    if not bits or not samplers or not seeds:
        raise TableError(
            f"Received: bits={list(bits)}, samplers={list(samplers)}, seeds={list(seeds)}; "
            "expected at least one of each"
        )
    return [Cell(int(b), str(m), int(s)) for s in seeds for b in bits for m in samplers]


def results_table(
    config: Config,
    *,
    bits: Sequence[int] = DEFAULT_BITS,
    samplers: Sequence[str] = DEFAULT_SAMPLERS,
    seeds: Sequence[int] | None = None,
    echo: Echo = print,
) -> Path:
    """Trains and evaluates every cell of the grid and writes the results table.

    Args:
        config: The base config (data, schedule, loss, ...); each cell overrides ``model.bits``,
            ``sampler.mode``, ``data.seed``, ``train.mode=features`` and its workdir.
        bits: Code lengths.
        samplers: Sampler modes.
        seeds: Split seeds; default ``data.seed``, ``data.seed + 1``, ``data.seed + 2``.
        echo: Progress lines.

    Returns:
        The ``table/`` folder.

    Raises:
        TableError: ``train.strategy=multi_worker`` (the grid's cells are small features-mode
            trainings, each a few seconds on one machine: run the table there).
        WorkdirLockedError: Another command is writing ``output.workdir``.
    """
    if config.train.strategy == "multi_worker":
        raise TableError(
            "Received: train.strategy='multi_worker' for the results table; expected 'default' "
            "or 'mirrored': the table's cells are small features-mode trainings that run on one "
            "machine (use multi_worker for 'train' or 'run')"
        )
    with workdir_lock(config.workdir):
        return _results_table(config, bits=bits, samplers=samplers, seeds=seeds, echo=echo)


def _results_table(config: Config, *, bits, samplers, seeds, echo: Echo) -> Path:
    seeds = tuple(seeds) if seeds is not None else tuple(config.data.seed + i for i in range(3))
    cells = _grid(bits, samplers, seeds)
    for cell in cells:  # validate every cell's config before any work
        config.replace(cell.overrides(Path("cell")))
    layout = RunLayout(config.workdir)
    prepared = prepare(config, echo=logger.info)
    features = _all_features(config, prepared, layout)
    rows = []
    for number, cell in enumerate(cells, 1):
        row_path = layout.table_row(cell.name)
        if row_path.is_file():
            row = json.loads(row_path.read_text())
            status = "done earlier"
        else:
            row = _run_cell(config, cell, features, layout)
            write_json_atomic(row_path, row)
            status = f"train {row['train_seconds']:.0f} s, eval {row['eval_seconds']:.0f} s"
        rows.append(row)
        k = config.eval.k
        echo(
            f"[{number}/{len(cells)}] bits={cell.bits} sampler={cell.sampler} seed={cell.seed}: "
            f"mAP@{k} {row[f'map@{k}']:.4f} (kNN {row[f'knn_map@{k}']:.4f}; {status})"
        )
    _write_outputs(layout, rows, config.eval.k, echo)
    return layout.table_dir


def _write_outputs(layout: RunLayout, rows: list[dict], k: int, echo: Echo) -> None:
    fields = list(rows[0])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(layout.table_csv, buffer.getvalue())
    markdown = summary_markdown(rows, k)
    write_text_atomic(layout.table_md, markdown)
    _plot(layout.table_png, rows, k)
    echo(markdown)
    echo(f"wrote {layout.table_csv}, {layout.table_md} and {layout.table_png}")


def _mean_std(values: Sequence[float]) -> str:
    array = np.asarray(values, np.float64)
    std = array.std(ddof=1) if array.size > 1 else 0.0
    return f"{array.mean():.4f} ± {std:.4f}"


def summary_markdown(rows: Sequence[dict], k: int) -> str:
    """Mean ± sample std over seeds per (bits, sampler), and the kNN reference per bits.

    Columns: mAP@k, MAP@R, P@k; multi-label rows (those with ``ndcg@k``): mAP@k, NDCG@k,
    ACG@k, WAP@k (:mod:`hpsh_tf2.evaluation.report`).
    """
    keys = (f"map@{k}", "map@r", f"precision@{k}")
    if rows and f"ndcg@{k}" in rows[0]:
        keys = (f"map@{k}", f"ndcg@{k}", f"acg@{k}", f"wap@{k}")
    header = "| bits | method | seeds | " + " | ".join(f"{key}" for key in keys) + " |"
    lines = [header, "|---:|---|---:|" + "---:|" * len(keys)]
    groups: dict[tuple[int, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((int(row["bits"]), str(row["sampler"])), []).append(row)
    for (bits, sampler), group in sorted(groups.items()):
        cells = " | ".join(_mean_std([r[key] for r in group]) for key in keys)
        lines.append(f"| {bits} | {sampler} | {len(group)} | {cells} |")
    by_seed = {int(row["seed"]): row for row in rows}
    knn = " | ".join(_mean_std([r[f"knn_{key}"] for r in by_seed.values()]) for key in keys)
    lines.append(f"| float | cosine kNN (reference) | {len(by_seed)} | {knn} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, rows: Sequence[dict], k: int) -> None:
    key = f"map@{k}"
    series = {}
    for sampler in sorted({str(r["sampler"]) for r in rows}):
        bits = sorted({int(r["bits"]) for r in rows if r["sampler"] == sampler})
        values = [
            [r[key] for r in rows if r["sampler"] == sampler and r["bits"] == b] for b in bits
        ]
        means = [float(np.mean(v)) for v in values]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        series[sampler] = (bits, means, stds)
    reference = float(np.mean([r[f"knn_{key}"] for r in rows]))
    save_metric_vs_bits(path, series=series, reference=reference, ylabel=key)
