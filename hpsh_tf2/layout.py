"""The files of a run folder (``output.workdir``), named in one place.

:class:`RunLayout` is the only place in the package that spells a run-folder name; every step
asks it for its paths. The docs' run-folder table (docs/reference/outputs.md) lists the same
names.

This module imports nothing else of the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["RunLayout"]


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder.

    Attributes:
        workdir: The run folder (``output.workdir``).
    """

    workdir: Path

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "workdir", Path(workdir))

    # ------------------------------------------------------------------ top level
    @property
    def config(self) -> Path:
        """``config.yaml``: the resolved config (every verb)."""
        return self.workdir / "config.yaml"

    @property
    def split(self) -> Path:
        """``split.json``: class names and the train/val/test split (prepare)."""
        return self.workdir / "split.json"

    @property
    def scan_report(self) -> Path:
        """``scan_report.json``: per-class counts, skipped and ignored files (prepare)."""
        return self.workdir / "scan_report.json"

    @property
    def scan_cache(self) -> Path:
        """``scan_cache.json``: the verified scan, re-used while the files are unchanged."""
        return self.workdir / "scan_cache.json"

    @property
    def steps(self) -> Path:
        """``steps.json``: fingerprints of the inputs of each step of ``run``."""
        return self.workdir / "steps.json"

    @property
    def chips(self) -> Path:
        """``chips/``: images composed from multispectral bands (``data.format: bigearthnet``)."""
        return self.workdir / "chips"

    @property
    def features_dir(self) -> Path:
        """``features/``: the backbone feature cache (extract)."""
        return self.workdir / "features"

    # ------------------------------------------------------------------ model/
    @property
    def model_dir(self) -> Path:
        """``model/``: everything train writes."""
        return self.workdir / "model"

    @property
    def hash_model(self) -> Path:
        """``model/hash_model.keras``: the selected hash model (features -> scores)."""
        return self.model_dir / "hash_model.keras"

    @property
    def image_model(self) -> Path:
        """``model/image_model.keras``: backbone + head (end-to-end mode)."""
        return self.model_dir / "image_model.keras"

    def selected_model(self, mode: Literal["features", "end_to_end"]) -> Path:
        """The model file that model selection writes in ``train.mode`` ``mode``."""
        return self.image_model if mode == "end_to_end" else self.hash_model

    @property
    def history(self) -> Path:
        """``model/history.csv``: per-epoch losses and validation mAP."""
        return self.model_dir / "history.csv"

    @property
    def logs(self) -> Path:
        """``model/logs/``: TensorBoard logs."""
        return self.model_dir / "logs"

    @property
    def checkpoints(self) -> Path:
        """``model/checkpoints/``: model + optimizer state after each epoch."""
        return self.model_dir / "checkpoints"

    @property
    def checkpoint_state(self) -> Path:
        """``model/checkpoints/state.json``: the fingerprint the checkpoints belong to."""
        return self.checkpoints / "state.json"

    @property
    def lock(self) -> Path:
        """``.lock``: the workdir lock of the running writer (PID and command inside)."""
        return self.workdir / ".lock"

    @property
    def model_fingerprint(self) -> Path:
        """``model/fingerprint.json``: the inputs the selected model was trained with."""
        return self.model_dir / "fingerprint.json"

    @property
    def eval_fingerprint(self) -> Path:
        """``eval/fingerprint.json``: the inputs (and model) the report was made from."""
        return self.eval_dir / "fingerprint.json"

    def abandoned_checkpoints(self, stamp: str) -> Path:
        """``model/abandoned-<stamp>/``: checkpoints and history of a run started afresh."""
        return self.model_dir / f"abandoned-{stamp}"

    def damaged_checkpoints(self, stamp: str) -> Path:
        """``model/damaged-<stamp>/``: checkpoint files that failed verification before a resume
        (kept for inspection; the run resumed from an older checkpoint)."""
        return self.model_dir / f"damaged-{stamp}"

    @property
    def train_summary(self) -> Path:
        """``model/train_summary.json``: selection rule, selected epoch, best validation mAP."""
        return self.model_dir / "train_summary.json"

    # ------------------------------------------------------------------ eval/
    @property
    def eval_dir(self) -> Path:
        """``eval/``: report, codes and figures (evaluate)."""
        return self.workdir / "eval"

    @property
    def report(self) -> Path:
        """``eval/report.json``: the metrics."""
        return self.eval_dir / "report.json"

    @property
    def codes(self) -> Path:
        """``eval/codes.npz``: codes, labels and paths in ranking order."""
        return self.eval_dir / "codes.npz"

    # ------------------------------------------------------------------ export/
    @property
    def export_root(self) -> Path:
        """``export/``: one folder of SavedModel versions per model name."""
        return self.workdir / "export"

    def export_model(self, name: str) -> Path:
        """``export/<name>/``: the versions of one exported model."""
        return self.export_root / name

    # ------------------------------------------------------------------ table/
    @property
    def table_dir(self) -> Path:
        """``table/``: the results table of ``cli.py table``."""
        return self.workdir / "table"

    @property
    def table_features(self) -> Path:
        """``table/features/``: every image's features, computed once for all cells."""
        return self.table_dir / "features"

    def table_cell(self, name: str) -> Path:
        """``table/cells/<name>/``: the run folder of one cell."""
        return self.table_dir / "cells" / name

    def table_row(self, name: str) -> Path:
        """``table/cells/<name>/row.json``: the finished cell's results (its presence = done)."""
        return self.table_cell(name) / "row.json"

    @property
    def table_csv(self) -> Path:
        """``table/results.csv``: one row per cell."""
        return self.table_dir / "results.csv"

    @property
    def table_md(self) -> Path:
        """``table/results.md``: mean +- std per code length and sampler, kNN reference."""
        return self.table_dir / "results.md"

    @property
    def table_png(self) -> Path:
        """``table/results.png``: mAP against code length, one line per sampler."""
        return self.table_dir / "results.png"

    # ------------------------------------------------------------------ index
    @property
    def index_db(self) -> Path:
        """``index.db``: the embedded (Milvus Lite) archive index, the default ``index.uri``."""
        return self.workdir / "index.db"

    @property
    def index_npz(self) -> Path:
        """``index.npz``: the in-memory archive index's file (``index.backend: memory``)."""
        return self.workdir / "index.npz"

    @property
    def index_status(self) -> Path:
        """``index_build.json``: the last ``index build`` of a server-side index."""
        return self.workdir / "index_build.json"
