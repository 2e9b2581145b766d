"""PNG figures: retrieval grids, precision-recall curves and 2-D code projections.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly, so nothing
touches pyplot's global state or the selected backend. Every file is written atomically
(rendered to memory, written to a temporary file in the target folder, then ``os.replace``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpsh_tf2.atomic import atomic_path
from hpsh_tf2.evaluation import relevance

__all__ = [
    "EMBEDDING_METHODS",
    "project_codes",
    "save_code_projection",
    "save_pr_curve",
    "save_retrieval_grid",
]

EMBEDDING_METHODS = ("auto", "pca", "tsne")
_GREEN = (0, 170, 0)
_RED = (255, 0, 0)
_BLUE = (0, 90, 255)
_GREY = (150, 150, 150)


def _write_atomic(path: str | os.PathLike[str], figure: Figure, dpi: int) -> Path:
    """Renders ``figure`` to PNG and moves it into place atomically."""
    FigureCanvasAgg(figure)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def _rgb(image: Any, name: str) -> np.ndarray:
    """Returns a ``uint8`` ``[H, W, 3]`` view of a gray, RGB or RGBA ``uint8`` image."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"Received: {name} with dtype {array.dtype}; expected uint8")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) == 0:
        raise ValueError(
            f"Received: {name} with shape {array.shape}; expected [H, W], [H, W, 3] or [H, W, 4]"
        )
    return array[:, :, :3]


def _framed(image: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """The image with a solid border (about 6% of its size, at least 3 px) drawn around it."""
    border = max(3, round(0.06 * max(image.shape[:2])))
    out = np.empty((image.shape[0] + 2 * border, image.shape[1] + 2 * border, 3), np.uint8)
    out[...] = color
    out[border:-border, border:-border] = image
    return out


def _class_name(label: Any, class_names: Sequence[str] | None) -> str:
    """Human-readable class name of a label (a multi-hot row: its names joined by ``;``)."""
    if class_names is not None and np.ndim(label) == 1:
        return relevance.label_text(label, class_names)
    if class_names is not None and isinstance(label, (int, np.integer)):
        if 0 <= int(label) < len(class_names):
            return str(class_names[int(label)])
    return str(label)


def save_retrieval_grid(
    path: str | os.PathLike[str],
    *,
    query_image: Any,
    retrieved_images: Sequence[Any],
    query_label: Any,
    retrieved_labels: Sequence[Any],
    class_names: Sequence[str] | None = None,
    distances: Sequence[int] | None = None,
    columns: int = 5,
    cell_inches: float = 2.0,
    dpi: int = 100,
    query_title: str | None = None,
) -> Path:
    """Saves a query and its ranked results as a grid (like MHCLN's 5 x 4 grids).

    The query comes first with a blue frame; each result is framed green when it is relevant to
    the query (:func:`hpsh_tf2.evaluation.relevance.item_relevant`: same class, or at least one
    shared label) and red otherwise, and titled with its rank, labels and Hamming distance. With
    ``query_label=None`` (unknown, e.g. a user's own image) the results get a neutral grey
    frame: right and wrong cannot be told.

    Args:
        path: Output PNG path (parent folders are created).
        query_image: ``uint8`` ``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``.
        retrieved_images: Sequence of ``uint8`` images, nearest first.
        query_label: Label of the query: a class index, a multi-hot row or label text;
            ``None``: unknown (grey frames).
        retrieved_labels: Labels of the results (same length as ``retrieved_images``).
        class_names: Optional names indexed by integer label.
        distances: Optional Hamming distances of the results.
        columns: Grid columns; rows follow from ``1 + len(retrieved_images)``.
        cell_inches: Size of one cell; the PNG is ``columns * cell_inches * dpi`` pixels wide
            and ``rows * cell_inches * dpi`` high.
        dpi: Resolution.
        query_title: The query tile's title (default ``"query: <class>"``).

    Returns:
        The written path.
    """
    if len(retrieved_labels) != len(retrieved_images):
        raise ValueError(
            f"Received: {len(retrieved_images)} retrieved_images and {len(retrieved_labels)} "
            "retrieved_labels; expected one label per image"
        )
    if distances is not None and len(distances) != len(retrieved_images):
        raise ValueError(
            f"Received: {len(distances)} distances for {len(retrieved_images)} images; "
            "expected one distance per image"
        )
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"Received: columns={columns!r}; expected a positive int")
    cells = [
        (
            _framed(_rgb(query_image, "query_image"), _BLUE),
            query_title or "query: " + _class_name(query_label, class_names),
        )
    ]
    for rank, (image, label) in enumerate(zip(retrieved_images, retrieved_labels), start=1):
        if query_label is None:
            color = _GREY
        else:
            color = _GREEN if relevance.item_relevant(query_label, label) else _RED
        title = f"{rank}: {_class_name(label, class_names)}"
        if distances is not None:
            title += f" (d={int(distances[rank - 1])})"
        cells.append((_framed(_rgb(image, f"retrieved_images[{rank - 1}]"), color), title))
    rows = -(-len(cells) // columns)
    figure = Figure(figsize=(columns * cell_inches, rows * cell_inches))
    for position, (image, title) in enumerate(cells):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.imshow(image, interpolation="nearest")
        axes.set_title(title, fontsize=7)
        axes.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.25)
    return _write_atomic(path, figure, dpi)


def save_pr_curve(
    path: str | os.PathLike[str],
    *,
    precision: Sequence[float],
    recall: Sequence[float],
    title: str = "Precision-recall (Hamming radius)",
    label: str | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Saves a precision-recall curve (e.g. ``report["pr_curve"]``, one point per radius).

    Args:
        path: Output PNG path.
        precision: Precision values.
        recall: Recall values, same length.
        title: Axes title.
        label: Optional legend label.
        figsize: Figure size in inches; the PNG is ``figsize * dpi`` pixels.
        dpi: Resolution.

    Returns:
        The written path.
    """
    precision = np.asarray(precision, np.float64)
    recall = np.asarray(recall, np.float64)
    if precision.ndim != 1 or precision.shape != recall.shape or precision.size == 0:
        raise ValueError(
            f"Received: precision with shape {precision.shape} and recall with shape "
            f"{recall.shape}; expected two non-empty 1-D arrays of the same length"
        )
    figure = Figure(figsize=figsize)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot(recall, precision, marker="o", markersize=3, label=label)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if label:
        axes.legend(loc="lower left")
    figure.tight_layout()
    return _write_atomic(path, figure, dpi)


def _pca(points: np.ndarray) -> np.ndarray:
    """Projection on the two leading principal axes (NumPy SVD)."""
    centered = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    projected = centered @ components[:2].T
    if projected.shape[1] < 2:
        projected = np.pad(projected, [(0, 0), (0, 2 - projected.shape[1])])
    return projected


def _tsne_class() -> Any:
    """``sklearn.manifold.TSNE`` or None when scikit-learn is not installed."""
    try:
        return importlib.import_module("sklearn.manifold").TSNE
    except ImportError:
        return None


def project_codes(codes: Any, *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D projection of binary codes (for a picture; not the sampler's embeddings).

    Args:
        codes: ``[N, bits]`` codes (0/1 or real-valued scores).
        method: ``"pca"`` (NumPy SVD), ``"tsne"`` (scikit-learn, Hamming metric, an optional
            extra: ``pip install scikit-learn``) or ``"auto"`` (t-SNE if scikit-learn is
            installed and ``N > 5``, else PCA).
        seed: Random state of t-SNE.

    Returns:
        ``(points [N, 2], method_used)``.
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"Received: method={method!r}; expected one of {EMBEDDING_METHODS}")
    points = np.asarray(codes, np.float64)
    if points.ndim != 2 or points.shape[0] < 2:
        raise ValueError(f"Received: codes with shape {points.shape}; expected [N >= 2, bits]")
    tsne = _tsne_class() if method != "pca" else None
    if method == "tsne" and tsne is None:
        raise ImportError("method='tsne' needs scikit-learn: pip install scikit-learn")
    if tsne is None or points.shape[0] <= 5:
        return _pca(points), "pca"
    perplexity = float(min(30.0, (points.shape[0] - 1) / 3.0))
    model = tsne(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return model.fit_transform(points), "tsne"


def save_code_projection(
    path: str | os.PathLike[str],
    *,
    codes: Any,
    labels: Any,
    class_names: Sequence[str] | None = None,
    method: str = "auto",
    seed: int = 0,
    figsize: tuple[float, float] = (7.0, 6.0),
    dpi: int = 100,
) -> str:
    """Saves a scatter plot of a 2-D projection of the codes, coloured by class.

    Args:
        path: Output PNG path.
        codes: ``[N, bits]`` codes.
        labels: ``[N]`` labels (integer labels index ``class_names``), or multi-hot
            ``[N, C]`` (each point coloured by its first label).
        class_names: Optional class names for the legend (shown for up to 30 classes).
        method: ``"auto"``, ``"pca"`` or ``"tsne"`` (see :func:`project_codes`).
        seed: Random state of t-SNE.
        figsize: Figure size in inches; the PNG is ``figsize * dpi`` pixels.
        dpi: Resolution.

    Returns:
        The projection method used (``"pca"`` or ``"tsne"``).
    """
    labels = np.asarray(labels)
    if relevance.is_multi_hot(labels):  # coloured by each item's first label
        labels = np.argmax(labels, axis=1)
    points, used = project_codes(codes, method=method, seed=seed)
    if labels.shape != (points.shape[0],):
        raise ValueError(
            f"Received: labels with shape {labels.shape}; expected ({points.shape[0]},)"
        )
    figure = Figure(figsize=figsize)
    axes = figure.add_subplot(1, 1, 1)
    classes = np.unique(labels)
    colors = _palette(len(classes))
    for color, value in zip(colors, classes):
        chosen = labels == value
        axes.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=8,
            color=color,
            label=_class_name(value, class_names),
        )
    if len(classes) <= 30:
        axes.legend(fontsize=6, markerscale=1.5, loc="best", ncol=2)
    axes.set_title(f"Hash codes, 2-D {used.upper()}")
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    _write_atomic(path, figure, dpi)
    return used


def _palette(count: int) -> list[tuple[float, float, float, float]]:
    """``count`` distinct colours: tab20 for up to 20 classes, else samples of turbo."""
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](i / (count - 1)) for i in range(count)]


def save_metric_vs_bits(
    path: str | os.PathLike[str],
    *,
    series: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]],
    reference: float | None = None,
    reference_label: str = "float kNN",
    ylabel: str = "mAP@20",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Saves a metric against code length, one line with error bars per method.

    Args:
        path: Output PNG path.
        series: ``{label: (bits, means, stds)}``, each a sequence of the same length.
        reference: A horizontal reference line (e.g. the float-feature kNN), or ``None``.
        reference_label: Legend label of the reference line.
        ylabel: Y axis label.
        figsize: Figure size in inches.
        dpi: Resolution.

    Returns:
        The written path.
    """
    if not series:
        raise ValueError("Received: no series; expected at least one method to plot")
    figure = Figure(figsize=figsize)
    axes = figure.add_subplot(1, 1, 1)
    for label, (bits, means, stds) in series.items():
        if not (len(bits) == len(means) == len(stds)) or not len(bits):
            raise ValueError(
                f"Received: series {label!r} with {len(bits)} bits, {len(means)} means and "
                f"{len(stds)} stds; expected the same non-zero length"
            )
        axes.errorbar(list(bits), list(means), yerr=list(stds), marker="o", capsize=3, label=label)
    if reference is not None:
        axes.axhline(float(reference), color="grey", linestyle="--", label=reference_label)
    axes.set_xlabel("bits")
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    return _write_atomic(path, figure, dpi)
