"""The results table: code lengths x methods x split seeds, trained and evaluated in one go.

:func:`results_table` runs a grid of cells from one config. A *method* is a training loss with
its sampler and preset: a sampler mode (``hpsh``, ``random``, ``semihard``, ...) means the HPSH
loss with that sampler, a loss name (``dpsh``, ``csq``, ...; registry ``LOSSES``) that loss with
its preset hyper-parameters (docs/how-to/baselines.md). Backbone features are computed (or
loaded) once for every image; each cell then makes its split (``data.seed``), trains the hash
head in features mode, and evaluates with the config's protocol. A cell's finished row is
written atomically, so a rerun (also after ``kill -9``) skips finished cells and resumes an
interrupted one from its epoch checkpoints. The float-feature cosine kNN on the same queries is
the reference row.

Outputs (``table/`` of the run folder): ``results.csv`` (one row per cell), ``results.md``
(methods ranked per code length by mean mAP@k, mean +- std over seeds, and whether each is
within the seed spread of the best) and ``results.png`` (mAP vs bits, one line per method,
error bars).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from hpsh_tf2.registry import LOSSES, SAMPLERS, STRATEGIES
from hpsh_tf2.workflow import evaluate, prepare, train

__all__ = [
    "ALL_METHODS",
    "DEFAULT_BITS",
    "DEFAULT_METHODS",
    "DEFAULT_SAMPLERS",
    "Cell",
    "Method",
    "TableError",
    "knn_metrics",
    "knn_reference",
    "resolve_methods",
    "results_table",
    "summary_markdown",
]

logger = logging.getLogger(__name__)
DEFAULT_BITS = (16, 32, 64)
DEFAULT_METHODS = ("hpsh", "random", "semihard")
DEFAULT_SAMPLERS = DEFAULT_METHODS
ALL_METHODS = ("hpsh", "semihard", "random", "dpsh", "dsh", "hashnet", "dch", "csq", "greedyhash")
"""The methods table of docs/how-to/baselines.md."""
Echo = Callable[[str], None]
_GRADED_KEYS = ("ndcg@{k}", "acg@{k}", "wap@{k}")


class TableError(HPSHError, ValueError):
    """The grid cannot be run as asked."""


@dataclass(frozen=True)
class Method:
    """A row of the table: a training loss with its sampler (and the loss's preset).

    Attributes:
        name: The name in ``--methods`` (and in the cell folders and rows).
        loss: ``loss.name``.
        sampler: ``sampler.mode``, or ``None`` to keep the config's (a loss without triplets).
    """

    name: str
    loss: str
    sampler: str | None

    def values(self, config: Config) -> dict[str, Any]:
        """Typed ``loss.name`` / ``sampler.mode`` values; ``loss.options`` of the config are
        kept only for its own loss (another method starts from its preset)."""
        values: dict[str, Any] = {"loss.name": self.loss}
        if self.loss != config.loss.name:
            values["loss.options"] = {}
        if self.sampler is not None:
            values["sampler.mode"] = self.sampler
        return values


def resolve_methods(
    methods: Sequence[str] | None, samplers: Sequence[str] | None, config: Config
) -> list[Method]:
    """The methods of a grid from ``--methods`` (or the deprecated ``--samplers``).

    A method name that is a sampler mode is the HPSH loss with that sampler; a name in
    ``LOSSES`` is that loss (triplet losses keep the config's ``sampler.mode``). ``samplers``
    (deprecated) are sampler modes trained with the config's own loss, as before ``--methods``.

    Raises:
        TableError: Both or neither given, or an unknown name (the message lists the names).
    """
    if methods is not None and samplers is not None:
        raise TableError("Received both --methods and --samplers; use --methods only")
    if samplers is not None:
        logger.warning("--samplers is deprecated; use --methods (a sampler name = HPSH with it)")
        return [Method(str(s), config.loss.name, str(s)) for s in samplers]
    resolved = []
    for name in DEFAULT_METHODS if methods is None else methods:
        name = str(name)
        if name in SAMPLERS:
            resolved.append(Method(name, "hpsh", name))
        elif name in LOSSES:
            resolved.append(Method(name, name, None))
        else:
            raise TableError(
                f"Received: --methods {name!r}; expected a sampler mode "
                f"({', '.join(SAMPLERS.names())}: HPSH with that sampler) or a loss "
                f"({', '.join(LOSSES.names())})"
            )
    return resolved


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        bits: Code length.
        method: The method (loss, sampler).
        seed: Split seed (``data.seed``).
    """

    bits: int
    method: Method
    seed: int

    @property
    def name(self) -> str:
        """Folder name of the cell."""
        return f"bits{self.bits}-{self.method.name}-seed{self.seed}"

    def values(self, config: Config, workdir: Path) -> dict[str, Any]:
        """The typed config values that make the cell's config (validated by the config)."""
        return {
            "model.bits": self.bits,
            **self.method.values(config),
            "data.seed": self.seed,
            "train.mode": "features",
            "eval.figures": False,
            "output.workdir": str(workdir),
        }


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
    cell_config = config.with_values(
        cell.values(config, cell_layout.workdir), source=f"table {cell.name}"
    )
    cell_layout.workdir.mkdir(parents=True, exist_ok=True)
    prepared = _cell_prepared(cell_config, features, cell_layout)
    start = time.perf_counter()
    result = train(cell_config, prepared=prepared, verbose=0)
    trained = time.perf_counter()
    report = evaluate(cell_config, prepared=prepared, echo=lambda _: None)
    k = config.eval.k
    uses_triplets = LOSSES.get(cell_config.loss.name).uses_triplets
    row = {
        "bits": cell.bits,
        "method": cell.method.name,
        "loss": cell_config.loss.name,
        "sampler": cell_config.sampler.mode if uses_triplets else "",
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


def _grid(bits: Sequence[int], methods: Sequence[Method], seeds: Sequence[int]) -> list[Cell]:
    if not bits or not methods or not seeds:
        raise TableError(
            f"Received: bits={list(bits)}, methods={[m.name for m in methods]}, "
            f"seeds={list(seeds)}; expected at least one of each"
        )
    return [Cell(int(b), m, int(s)) for s in seeds for b in bits for m in methods]


def results_table(
    config: Config,
    *,
    bits: Sequence[int] = DEFAULT_BITS,
    methods: Sequence[str] | None = None,
    samplers: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    echo: Echo = print,
) -> Path:
    """Trains and evaluates every cell of the grid and writes the results table.

    Args:
        config: The base config (data, schedule, ...); each cell overrides ``model.bits``,
            ``loss.name`` and ``sampler.mode`` (its method), ``data.seed``,
            ``train.mode=features`` and its workdir.
        bits: Code lengths.
        methods: Method names (:func:`resolve_methods`); default ``DEFAULT_METHODS``.
        samplers: Deprecated: sampler modes trained with the config's loss.
        seeds: Split seeds; default ``data.seed``, ``data.seed + 1``, ``data.seed + 2``.
        echo: Progress lines.

    Returns:
        The ``table/`` folder.

    Raises:
        TableError: An unknown method, an empty grid, or ``train.strategy=multi_worker`` (the
            grid's cells are small features-mode trainings, each a few seconds on one machine:
            run the table there).
        WorkdirLockedError: Another command is writing ``output.workdir``.
    """
    if getattr(STRATEGIES.get(config.train.strategy), "spans_workers", False):
        raise TableError(
            "Received: train.strategy='multi_worker' for the results table; expected 'default' "
            "or 'mirrored': the table's cells are small features-mode trainings that run on one "
            "machine (use multi_worker for 'train' or 'run')"
        )
    resolved = resolve_methods(methods, samplers, config)
    with workdir_lock(config.workdir):
        return _results_table(config, bits=bits, methods=resolved, seeds=seeds, echo=echo)


def _results_table(config: Config, *, bits, methods, seeds, echo: Echo) -> Path:
    seeds = tuple(seeds) if seeds is not None else tuple(config.data.seed + i for i in range(3))
    cells = _grid(bits, methods, seeds)
    for cell in cells:  # validate every cell's config before any work
        config.with_values(cell.values(config, Path("cell")), source=f"table {cell.name}")
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
            f"[{number}/{len(cells)}] bits={cell.bits} method={cell.method.name} "
            f"seed={cell.seed}: mAP@{k} {row[f'map@{k}']:.4f} (kNN {row[f'knn_map@{k}']:.4f}; "
            f"{status})"
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


def _method(row: dict) -> str:
    """A row's method (rows written before ``--methods`` name only their sampler)."""
    return str(row.get("method") or row["sampler"])


def _stats(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _mean_std(values: Sequence[float]) -> str:
    mean, std = _stats(values)
    return f"{mean:.4f} ± {std:.4f}"


def summary_markdown(rows: Sequence[dict], k: int) -> str:
    """Methods ranked per code length by mean mAP@k: mean ± sample std over seeds, and the
    gap to the best method of that code length.

    The gap is marked ``≈`` when it is within the seed spread, ``|gap| <=
    sqrt(std_best^2 + std_method^2)`` (one standard deviation of the difference of two
    independent seed means' draws); such a method is not distinguishable from the best with
    these seeds. The float-feature cosine kNN (mean over split seeds) closes the table.

    Columns: mAP@k, MAP@R, P@k; multi-label rows (those with ``ndcg@k``): mAP@k, NDCG@k,
    ACG@k, WAP@k (:mod:`hpsh_tf2.evaluation.report`).
    """
    keys = (f"map@{k}", "map@r", f"precision@{k}")
    if rows and f"ndcg@{k}" in rows[0]:
        keys = (f"map@{k}", f"ndcg@{k}", f"acg@{k}", f"wap@{k}")
    header = "| bits | rank | method | seeds | " + " | ".join(keys) + f" | Δ map@{k} vs best |"
    lines = [header, "|---:|---:|---|---:|" + "---:|" * len(keys) + "---|"]
    groups: dict[int, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault(int(row["bits"]), {}).setdefault(_method(row), []).append(row)
    for bits, by_method in sorted(groups.items()):
        stats = {m: _stats([r[keys[0]] for r in group]) for m, group in by_method.items()}
        order = sorted(stats, key=lambda m: (-stats[m][0], m))
        best_mean, best_std = stats[order[0]]
        for rank, method in enumerate(order, 1):
            group = by_method[method]
            cells = " | ".join(_mean_std([r[key] for r in group]) for key in keys)
            mean, std = stats[method]
            gap = mean - best_mean
            if rank == 1:
                mark = "best"
            elif abs(gap) <= math.sqrt(best_std**2 + std**2):
                mark = f"{gap:+.4f} ≈"
            else:
                mark = f"{gap:+.4f}"
            lines.append(f"| {bits} | {rank} | {method} | {len(group)} | {cells} | {mark} |")
    by_seed = {int(row["seed"]): row for row in rows}
    knn = " | ".join(_mean_std([r[f"knn_{key}"] for r in by_seed.values()]) for key in keys)
    lines.append(f"| float | | cosine kNN (reference) | {len(by_seed)} | {knn} | |")
    note = (
        "\nRanked per code length by mean "
        f"map@{k} over split seeds (± sample std); ≈: within the seed spread of the best "
        "(|Δ| <= sqrt(std_best² + std²)).\n"
    )
    return "\n".join(lines) + "\n" + note


def _plot(path: Path, rows: Sequence[dict], k: int) -> None:
    key = f"map@{k}"
    series = {}
    for method in sorted({_method(r) for r in rows}):
        bits = sorted({int(r["bits"]) for r in rows if _method(r) == method})
        values = [[r[key] for r in rows if _method(r) == method and r["bits"] == b] for b in bits]
        means = [float(np.mean(v)) for v in values]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        series[method] = (bits, means, stds)
    reference = float(np.mean([r[f"knn_{key}"] for r in rows]))
    save_metric_vs_bits(path, series=series, reference=reference, ylabel=key)
