"""Bulk encoding on Apache Beam: the index build's encoder as a pipeline any Beam runner runs.

The pipeline reads the list of files to encode (one JSON line each, written by the driver into
a staging folder), batches them, encodes each batch with a ``DoFn`` that loads the SavedModel
once per worker (:class:`EncodeFilesFn`, the same :class:`SavedModelEncoder` as the in-process
build, so the codes are bit for bit the same) and writes sharded JSON-lines files of codes and
skipped files. The driver then bulk-loads the shards into the index with upserts, so only one
process ever writes the index (a Milvus Lite file accepts one).

Runner: the local ``FnApiRunner`` (see :data:`DEFAULT_RUNNER`) unless the options name
another; for a cluster pass e.g. ``--beam-option=--runner=FlinkRunner
--beam-option=--flink_master=host:8081`` (or Spark, Dataflow) and put ``output.workdir`` (the
staging folder) and the archive on storage every worker
can read (the workers need ``pip install hpsh-tf2[beam]``, which brings TensorFlow).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from hpsh_tf2.data.scan import SkippedFile
from hpsh_tf2.index.encoder import SavedModelEncoder, model_record
from hpsh_tf2.index.walk import ArchiveFile, WalkResult

__all__ = ["EncodeFilesFn", "encode_with_beam", "run_encode_pipeline"]

logger = logging.getLogger(__name__)

_SHARD_PREFIX = "codes"
DEFAULT_RUNNER = "FnApiRunner"
"""The local runner used when the options name none. Beam 2.77's ``DirectRunner`` first tries
Prism, which it downloads from GitHub; ``FnApiRunner`` is the in-process portable runner that
``DirectRunner`` falls back to, with no download (``--direct_num_workers=N
--direct_running_mode=multi_processing`` spreads it over N processes)."""


class EncodeFilesFn(beam.DoFn):
    """Encodes a batch of file records (dicts) into JSON lines of codes or errors.

    The export is loaded in ``setup``: once per DoFn instance (one per worker thread or
    process), then reused for every bundle.

    Args:
        model_dir: The export (a path the workers can read).
        root: The archive root the records' relative paths are resolved against.
    """

    def __init__(self, model_dir: str, root: str) -> None:
        super().__init__()
        self._model_dir = str(model_dir)
        self._root = str(root)
        self._encoder: Any = None

    def setup(self) -> None:
        self._encoder = SavedModelEncoder(self._model_dir)

    def process(self, batch: Sequence[dict]) -> Iterator[str]:
        batch = list(batch)
        paths = [os.path.join(self._root, *item["path"].split("/")) for item in batch]
        result = self._encoder.encode_files(paths)
        for row, position in enumerate(result.ok):
            yield json.dumps({**batch[position], "code": result.packed[row].tobytes().hex()})
        for position, reason in result.bad:
            yield json.dumps({**batch[position], "error": reason})


def run_encode_pipeline(
    model_dir: str | os.PathLike[str],
    root: str,
    todo_path: str,
    output_prefix: str,
    *,
    batch_size: int,
    options: Sequence[str] = (),
) -> None:
    """Runs the encoding pipeline: ``todo_path`` JSON lines -> ``output_prefix-*.jsonl`` shards.

    Args:
        model_dir: The export (a path every worker can read).
        root: The archive root the records' relative paths are resolved against.
        todo_path: Text file of JSON records ``{"path", "class_name", "size", "mtime_ns"}``.
        output_prefix: Prefix of the output shards.
        batch_size: Images per SavedModel call.
        options: Beam pipeline options; ``--runner=FnApiRunner`` (local, in-process) when none
            names a runner.
    """
    args = list(options)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append(f"--runner={DEFAULT_RUNNER}")
    with beam.Pipeline(options=PipelineOptions(args)) as pipeline:
        _ = (
            pipeline
            | "ReadTodo" >> beam.io.ReadFromText(todo_path)
            | "Parse" >> beam.Map(json.loads)
            | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
            | "Encode" >> beam.ParDo(EncodeFilesFn(str(model_dir), root))
            | "Write" >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl")
        )


def _read_shards(prefix: str) -> Iterator[dict]:
    matches = FileSystems.match([f"{prefix}*.jsonl"])[0].metadata_list
    for meta in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(meta.path) as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)


def encode_with_beam(
    model_dir: str | os.PathLike[str],
    walk: WalkResult,
    files: Sequence[ArchiveFile],
    *,
    staging: str | os.PathLike[str],
    batch_size: int,
    options: Sequence[str] = (),
    skipped: list[SkippedFile],
) -> Iterator[tuple[list[ArchiveFile], np.ndarray, int]]:
    """Encodes ``files`` with the Beam pipeline and yields batches to upsert.

    Yields ``(files that encoded, their packed codes, files consumed)`` per ``batch_size``
    records of the shards, in path order; undecodable files are appended to ``skipped``. The
    run's staging folder is removed once every batch was consumed.
    """
    width = model_record(model_dir).bits // 8
    run_dir = Path(staging) / f"run-{uuid.uuid4().hex[:12]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        todo = run_dir / "todo.jsonl"
        with open(todo, "w", encoding="utf-8") as handle:
            for item in files:
                handle.write(json.dumps(item.__dict__) + "\n")
        prefix = str(run_dir / _SHARD_PREFIX)
        run_encode_pipeline(
            model_dir, walk.root, str(todo), prefix, batch_size=batch_size, options=options
        )
        records = sorted(_read_shards(prefix), key=lambda r: r["path"])
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            good = [r for r in chunk if "code" in r]
            skipped.extend(SkippedFile(r["path"], r["error"]) for r in chunk if "error" in r)
            packed = np.frombuffer(b"".join(bytes.fromhex(r["code"]) for r in good), np.uint8)
            files_ok = [
                ArchiveFile(r["path"], r["class_name"], int(r["size"]), int(r["mtime_ns"]))
                for r in good
            ]
            yield files_ok, packed.reshape(len(good), width), len(chunk)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
