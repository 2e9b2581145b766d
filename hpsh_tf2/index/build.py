"""Incremental, resumable index builds, and searches of the index with image files.

A build compares the archive folder (:func:`hpsh_tf2.index.walk.walk_images`) with the rows of
the collection: rows whose file is gone are deleted, files that are new or whose
``(size, mtime_ns)`` changed are encoded with the export (:class:`SavedModelEncoder`, or an
Apache Beam pipeline with ``runner="beam"``) and upserted in batches, everything else is left
alone.

Kill -9 safety: the collection itself is the build's journal. Each batch is one ``upsert``
keyed by the relative path's integer id and carrying the file's fingerprint; reads are
``Strong``, so after an interruption at any point the next build sees exactly the batches
that landed: those files are unchanged and skipped, the rest are encoded again (nothing lost),
and a batch written twice replaces its own rows (nothing indexed twice). Deletions are
idempotent too. A small ``index_build.json`` beside a local index (or in the workdir)
records the last build's counts for ``index info``.

Labels: by default a row's ``class`` is the first folder under the archive root. With a list
of images (``labels=`` a ``.csv``/``.jsonl`` manifest, read by
:func:`hpsh_tf2.data.manifest.read_manifest`, paths relative to the archive root) it is the
image's label names sorted by name and joined by ``;`` (``"Forest;River"``), and ``""`` for a
file the list does not name (counted as ``unlisted``); see :func:`archive_labels`. A build
compares each row's stored ``class`` too: a file whose labels changed is encoded again and its
row replaced (counted as ``relabelled``, within ``updated``).

Guards (issue 23): one build per index at a time (:mod:`hpsh_tf2.index.lock`); a build that
would remove many rows is refused without ``prune`` (:func:`check_prune`); a full disk or
undecodable file is one line naming the file.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hpsh_tf2.atomic import write_json_atomic
from hpsh_tf2.data.labels import SEPARATOR
from hpsh_tf2.data.manifest import read_manifest
from hpsh_tf2.data.scan import SkippedFile
from hpsh_tf2.index.backend import (
    ArchiveIndexError,
    Filters,
    IndexHit,
    is_file_uri,
    open_index,
)
from hpsh_tf2.index.encoder import SavedModelEncoder, check_same_model, model_record
from hpsh_tf2.index.lock import index_writer_lock
from hpsh_tf2.index.prune import PruneRefusedError, check_removal
from hpsh_tf2.index.store import MAX_CLASS_BYTES, disk_full, disk_full_error, row_id
from hpsh_tf2.index.walk import ArchiveFile, WalkResult, walk_images
from hpsh_tf2.layout import RunLayout
from hpsh_tf2.serving import Neighbour

__all__ = [
    "ArchiveLabels",
    "BuildPlan",
    "BuildReport",
    "LabelCounts",
    "PruneRefusedError",
    "apply_labels",
    "archive_labels",
    "build_index",
    "check_prune",
    "label_counts_of",
    "plan_build",
    "search_images",
]

logger = logging.getLogger(__name__)

RUNNERS = ("local", "beam")


@dataclass(frozen=True)
class BuildPlan:
    """What a build has to do.

    Attributes:
        encode: Files to encode (new or changed), sorted by path.
        delete: Paths in the index whose file is gone.
        unchanged: Files already indexed with the same fingerprint.
        replace: Paths of ``encode`` that replace an existing row (changed files).
        relabelled: Paths of ``replace`` whose file is unchanged but whose ``class`` (labels)
            differs from the stored one.
    """

    encode: tuple[ArchiveFile, ...]
    delete: tuple[str, ...]
    unchanged: int
    replace: frozenset[str] = frozenset()
    relabelled: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ArchiveLabels:
    """The labels of an archive's images, from a list of images (a manifest).

    Attributes:
        file: The manifest, as given.
        text: ``{relative path: "A;B"}``: label names sorted by name, joined by ``;``, cut to
            whole labels within ``MAX_CLASS_BYTES`` UTF-8 bytes.
        trimmed: Paths whose label text was cut (labels left out), sorted.
    """

    file: str
    text: Mapping[str, str]
    trimmed: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelCounts:
    """How the files of one build got their labels (``BuildReport.labels``).

    Attributes:
        file: The manifest the labels came from.
        listed: Image files found that the manifest names.
        unlisted: Image files found that it does not name (stored with class ``""``).
        missing: Manifest rows whose file was not found under the archive root.
        trimmed: Files whose label text was cut to ``MAX_CLASS_BYTES``.
        relabelled: Unchanged files re-indexed because their labels changed.
    """

    file: str
    listed: int
    unlisted: int
    missing: int
    trimmed: int
    relabelled: int = 0


@dataclass(frozen=True)
class BuildReport:
    """Counts of one build.

    Attributes:
        images_root: The archive folder.
        uri: The index URI.
        collection: The collection name.
        files: Image files found.
        added: New files indexed.
        updated: Changed files re-encoded.
        removed: Rows deleted (file gone).
        unchanged: Files skipped as up to date.
        skipped: Files that could not be read or decoded (not indexed), with the reason.
        ignored: Hidden entries and non-image files.
        rows: Rows in the index after the build.
        seconds: Wall time of the build.
        runner: ``"local"`` or ``"beam"``.
        encoded_per_second: Encoding throughput.
        labels: Where the labels came from and how many files each way (None: folder
            classes).
    """

    images_root: str
    uri: str
    collection: str
    files: int
    added: int
    updated: int
    removed: int
    unchanged: int
    skipped: tuple[SkippedFile, ...]
    ignored: int
    rows: int
    seconds: float
    runner: str = "local"
    encoded_per_second: float = field(default=0.0)
    labels: LabelCounts | None = None

    def summary(self) -> str:
        """A few lines for the CLI."""
        lines = [
            f"index {self.uri} (collection {self.collection!r}): {self.rows} images",
            f"  {self.files} image files under {self.images_root}: {self.added} added, "
            f"{self.updated} updated, {self.removed} removed, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped (undecodable), {self.ignored} ignored (not images)",
            f"  {self.seconds:.1f} s ({self.runner} runner, "
            f"{self.encoded_per_second:.1f} images/s encoded)",
        ]
        if self.labels is None:
            lines.append("  labels: the first folder under the archive root")
        else:
            counts = self.labels
            lines.append(
                f"  labels from {counts.file}: {counts.listed} files listed, {counts.unlisted} "
                f'not listed (class ""), {counts.missing} listed but not found, '
                f"{counts.relabelled} relabelled, {counts.trimmed} trimmed to "
                f"{MAX_CLASS_BYTES} bytes"
            )
        lines.extend(f"  skipped {s.path}: {s.reason}" for s in self.skipped[:20])
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more skipped files")
        return "\n".join(lines)


def drop_id_collisions(walk: WalkResult) -> tuple[WalkResult, list[SkippedFile]]:
    """Leaves out files whose :func:`~hpsh_tf2.index.store.row_id` equals an earlier file's.

    A 63-bit digest makes this all but impossible, but two rows sharing a key would silently
    replace each other, so such a file is skipped and named instead.
    """
    seen: dict[int, str] = {}
    kept: list[ArchiveFile] = []
    skipped: list[SkippedFile] = []
    for item in walk.files:
        key = row_id(item.path)
        if key in seen:
            skipped.append(SkippedFile(item.path, f"row id {key} collides with {seen[key]!r}"))
            continue
        seen[key] = item.path
        kept.append(item)
    if not skipped:
        return walk, []
    return WalkResult(root=walk.root, files=tuple(kept), ignored=walk.ignored), skipped


def plan_build(
    walk: WalkResult,
    indexed: dict[str, tuple[int, int]],
    classes: Mapping[str, str] | None = None,
) -> BuildPlan:
    """Compares the archive with the index's ``{path: (size, mtime_ns)}``.

    Args:
        walk: The archive's files, with the class (labels) each row should carry.
        indexed: The index's fingerprints.
        classes: The index's stored ``{path: class}``; a file with the same fingerprint but
            another class is encoded again (its labels changed). None: not compared.
    """
    present = {f.path for f in walk.files}
    encode: list[ArchiveFile] = []
    relabelled: set[str] = set()
    for item in walk.files:
        stored = indexed.get(item.path)
        if stored != item.fingerprint:
            encode.append(item)
        elif classes is not None and classes.get(item.path, "") != item.class_name:
            encode.append(item)
            relabelled.add(item.path)
    return BuildPlan(
        encode=tuple(encode),
        delete=tuple(sorted(p for p in indexed if p not in present)),
        unchanged=len(walk.files) - len(encode),
        replace=frozenset(f.path for f in encode if f.path in indexed),
        relabelled=frozenset(relabelled),
    )


def _label_text(names: Sequence[str]) -> tuple[str, bool]:
    """Sorted names joined by ``;``, whole names only, within ``MAX_CLASS_BYTES``; and
    whether some were left out."""
    kept: list[str] = []
    size = 0
    for name in sorted(names):
        extra = len(name.encode("utf-8")) + (1 if kept else 0)
        if size + extra > MAX_CLASS_BYTES:
            return SEPARATOR.join(kept), True
        kept.append(name)
        size += extra
    return SEPARATOR.join(kept), False


def archive_labels(labels_file: str | os.PathLike[str]) -> ArchiveLabels:
    """Reads the labels of an archive's images from a ``.csv``/``.jsonl`` manifest.

    The manifest has the format of ``data.manifest``
    (:func:`hpsh_tf2.data.manifest.read_manifest`), paths relative to the archive root. Each
    image's label text is its label names sorted by name (Python string order, as the label
    map) and joined by ``;``. Text longer than ``MAX_CLASS_BYTES`` UTF-8 bytes (the index's
    ``class`` field) keeps the whole labels that fit; the others are left out with a warning.

    Raises:
        DatasetError: The manifest is missing or has a bad row (file and line named).
        ArchiveIndexError: A label name holds ``;`` (the separator of the stored text).
    """
    items = read_manifest(labels_file)
    text: dict[str, str] = {}
    trimmed: list[str] = []
    for item in items:
        for name in item.labels:
            if SEPARATOR in name:
                raise ArchiveIndexError(
                    f"{item.source}: label {name!r} holds {SEPARATOR!r}; expected label names "
                    f"without {SEPARATOR!r} (the index stores labels joined by it)"
                )
        text[item.path], cut = _label_text(item.labels)
        if cut:
            trimmed.append(item.path)
    if trimmed:
        logger.warning(
            "%d image(s) of %s have labels longer than %d bytes together; the index keeps the "
            "labels that fit (first: %s)",
            len(trimmed),
            labels_file,
            MAX_CLASS_BYTES,
            trimmed[0],
        )
    return ArchiveLabels(
        file=os.path.abspath(os.path.expanduser(labels_file)),
        text=text,
        trimmed=tuple(sorted(trimmed)),
    )


def apply_labels(walk: WalkResult, labels: ArchiveLabels) -> tuple[WalkResult, LabelCounts]:
    """The walk with each file's class set to its label text (``""`` when not listed)."""
    files = tuple(replace(f, class_name=labels.text.get(f.path, "")) for f in walk.files)
    found = {f.path for f in walk.files}
    listed = sum(1 for f in walk.files if f.path in labels.text)
    counts = LabelCounts(
        file=labels.file,
        listed=listed,
        unlisted=len(walk.files) - listed,
        missing=sum(1 for p in labels.text if p not in found),
        trimmed=sum(1 for p in labels.trimmed if p in found),
    )
    return WalkResult(root=walk.root, files=files, ignored=walk.ignored), counts


def check_prune(
    plan: BuildPlan, walk: WalkResult, indexed: int, *, max_fraction: float, prune: bool
) -> None:
    """Refuses a build that would remove many rows, unless ``prune`` says so.

    An empty or mistyped ``--images`` folder (an unmounted share) looks like an archive whose
    every file was deleted; removing rows is refused when the folder holds no image at all, or
    when more than ``max_fraction`` of the ``indexed`` rows would go (the rule of
    :func:`hpsh_tf2.index.prune.check_removal`, shared with scene archives).

    Raises:
        PruneRefusedError: One line: how many rows would be removed, the first paths, and how
            to force it.
    """
    check_removal(
        len(plan.delete),
        indexed,
        names=plan.delete,
        kind="files",
        source="--images",
        empty=None if walk.files else f"{walk.root} holds no image files",
        max_fraction=max_fraction,
        prune=prune,
    )


class _Progress:
    """A one-line progress counter on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int, *, enabled: bool, label: str = "encoded") -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self.label = label
        self.start = time.perf_counter()
        self.done = 0
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def update(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self._tty and now - self._last < 5.0 and self.done < self.total:
            return
        self._last = now
        rate = self.done / max(now - self.start, 1e-9)
        text = f"{self.label} {self.done}/{self.total} images ({rate:.1f}/s)"
        print(("\r" + text) if self._tty else text, end="" if self._tty else "\n",
              file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.enabled and self._tty:
            print(file=sys.stderr)


Batch = tuple[list[ArchiveFile], np.ndarray]
"""Files that encoded and their packed codes."""


def _local_batches(
    encoder: SavedModelEncoder,
    walk: WalkResult,
    files: Sequence[ArchiveFile],
    batch_size: int,
    skipped: list[SkippedFile],
):
    """Encodes ``files`` in batches, two in flight: reading and decoding batch i + 1 overlaps
    the forward pass of batch i (the signature is thread-safe). Yields in order."""
    chunks = [list(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]

    def encode(chunk: list[ArchiveFile]):
        return encoder.encode_files([walk.absolute(f.path) for f in chunk])

    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(encode, chunk) for chunk in chunks[:2]]
        for index, chunk in enumerate(chunks):
            result = pending.pop(0).result()
            if index + 2 < len(chunks):
                pending.append(pool.submit(encode, chunks[index + 2]))
            skipped.extend(SkippedFile(chunk[i].path, reason) for i, reason in result.bad)
            yield [chunk[i] for i in result.ok], result.packed, len(chunk)


def _load_encoder(model_dir: str | os.PathLike[str]) -> SavedModelEncoder:
    """Loads the export and runs its signature once (the first call builds the graph)."""
    encoder = SavedModelEncoder(model_dir)
    encoder.warm_up()
    return encoder


def status_path(uri: str, workdir: Path) -> Path:
    """Where the last build's counts go: beside a file index, else in the workdir."""
    if is_file_uri(uri):
        return Path(uri).with_name(Path(uri).name + ".build.json")
    return RunLayout(workdir).index_status


def build_index(
    model_dir: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    uri: str,
    collection: str = "hpsh",
    backend: str = "milvus",
    batch_size: int = 64,
    index_type: str = "BIN_FLAT",
    nlist: int = 1024,
    runner: str = "local",
    beam_options: Sequence[str] = (),
    workdir: str | os.PathLike[str] = ".",
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    max_remove_fraction: float = 0.5,
    prune: bool = False,
    labels: str | os.PathLike[str] | None = None,
) -> BuildReport:
    """Brings the index at ``uri`` up to date with the image files under ``images``.

    Args:
        model_dir: The export whose ``serving_default`` encodes the images.
        images: Archive folder (any layout; the first sub-folder is the class unless
            ``labels`` is given).
        uri: Index URI (a Milvus Lite file, or ``http://host:19530``; a memory index's
            ``.npz`` file).
        collection: Collection name.
        backend: ``index.backend``, a name in :data:`hpsh_tf2.registry.INDEX_BACKENDS`.
        batch_size: Images per SavedModel call and per upsert.
        index_type: ``BIN_FLAT`` or ``BIN_IVF_FLAT`` (Milvus server only), used when creating.
        nlist: Clusters of ``BIN_IVF_FLAT``.
        runner: ``"local"`` (in-process) or ``"beam"`` (Apache Beam pipeline; see
            :mod:`hpsh_tf2.index.beam`).
        beam_options: Beam pipeline options (``--runner=FlinkRunner``, ...) for ``runner="beam"``.
        workdir: Where Beam stages its shard files and, for a server URI, where the build
            status file goes.
        progress: Print a progress line on stderr.
        on_batch: Called with the running count of upserted rows after each batch (tests use
            it to interrupt a build).
        max_remove_fraction: Most rows a build removes without ``prune`` (a fraction).
        prune: Remove the rows of vanished files whatever their number.
        labels: A ``.csv``/``.jsonl`` list of images and labels (paths relative to
            ``images``): rows carry ``"A;B"`` (:func:`archive_labels`), unlisted files ``""``.

    Returns:
        The :class:`BuildReport`.

    Raises:
        DatasetError: ``labels`` is missing or has a bad row.
        ModelMismatchError: The index holds another model's codes.
        IndexBusyError: Another process is building this index.
        PruneRefusedError: Too many rows would be removed (see :func:`check_prune`).
        ArchiveIndexError: Unknown runner, unsupported index type.
    """
    if runner not in RUNNERS:
        raise ArchiveIndexError(f"Received: runner={runner!r}; expected one of {RUNNERS}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArchiveIndexError(f"Received: batch_size={batch_size!r}; expected a positive int")
    start = time.perf_counter()
    walk, collided = drop_id_collisions(walk_images(images))
    label_counts = None
    if labels is not None:
        walk, label_counts = apply_labels(walk, archive_labels(labels))
    record = model_record(model_dir)
    with index_writer_lock(uri):
        return _build_locked(
            model_dir, walk, collided, record, uri=uri, collection=collection, backend=backend,
            batch_size=batch_size, index_type=index_type, nlist=nlist, runner=runner,
            beam_options=beam_options, workdir=Path(workdir), progress=progress,
            on_batch=on_batch, start=start, prune_rule=(max_remove_fraction, prune),
            label_counts=label_counts,
        )  # fmt: skip


def _build_locked(
    model_dir: str | os.PathLike[str],
    walk: WalkResult,
    collided: list[SkippedFile],
    record: Any,
    *,
    uri: str,
    collection: str,
    backend: str,
    batch_size: int,
    index_type: str,
    nlist: int,
    runner: str,
    beam_options: Sequence[str],
    workdir: Path,
    progress: bool,
    on_batch: Callable[[int], None] | None,
    start: float,
    prune_rule: tuple[float, bool],
    label_counts: LabelCounts | None = None,
) -> BuildReport:
    """The build itself, under the index's writer lock (see :func:`build_index`)."""
    with ExitStack() as stack:
        loading = None
        if runner == "local" and walk.files and is_file_uri(uri) and not Path(uri).exists():
            # A new index encodes every file: load the model while the index opens.
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1))
            loading = pool.submit(_load_encoder, model_dir)
        store = stack.enter_context(open_index(backend, uri, collection))
        store.open_for(record, index_type=index_type, nlist=nlist)
        indexed = store.fingerprints()
        plan = plan_build(walk, indexed, store.row_classes())
        check_prune(plan, walk, len(indexed), max_fraction=prune_rule[0], prune=prune_rule[1])
        store.remove(plan.delete)
        skipped: list[SkippedFile] = list(collided)
        encoder = None
        if runner == "local" and plan.encode:
            encoder = loading.result() if loading is not None else _load_encoder(model_dir)
        bar = _Progress(len(plan.encode), enabled=progress)
        encode_start = time.perf_counter()
        if encoder is not None:
            batches = _local_batches(encoder, walk, plan.encode, batch_size, skipped)
        elif plan.encode:
            from hpsh_tf2.index.beam import encode_with_beam  # apache-beam: optional extra

            batches = encode_with_beam(
                model_dir,
                walk,
                plan.encode,
                staging=workdir / "index_staging",
                batch_size=batch_size,
                options=beam_options,
                skipped=skipped,
            )
        else:
            batches = iter(())
        written = 0
        added = updated = 0
        for files, packed, seen in batches:
            replaced = sum(1 for f in files if f.path in plan.replace)
            updated += replaced
            added += len(files) - replaced
            written += store.upsert(
                [f.path for f in files],
                packed,
                [f.class_name for f in files],
                [f.size for f in files],
                [f.mtime_ns for f in files],
            )
            bar.update(seen)
            if on_batch is not None:
                on_batch(written)
        bar.close()
        encode_seconds = time.perf_counter() - encode_start
        bad_paths = {s.path for s in skipped}
        # A changed file that no longer decodes keeps no stale row.
        stale = [f.path for f in plan.encode if f.path in bad_paths]
        store.remove(stale)
        rows = store.count()
        expected = len(indexed) - len(plan.delete) + added - sum(p in plan.replace for p in stale)
        _check_rows(rows, expected, uri)
    report = BuildReport(
        images_root=walk.root,
        uri=uri,
        collection=collection,
        files=len(walk.files),
        added=added,
        updated=updated,
        removed=len(plan.delete),
        unchanged=plan.unchanged,
        skipped=tuple(sorted(skipped, key=lambda s: s.path)),
        ignored=walk.ignored,
        rows=rows,
        seconds=time.perf_counter() - start,
        runner=runner,
        encoded_per_second=len(plan.encode) / encode_seconds if encode_seconds > 0 else 0.0,
        labels=(
            None
            if label_counts is None
            else replace(label_counts, relabelled=len(plan.relabelled - bad_paths))
        ),
    )
    payload = asdict(report)
    payload["skipped"] = [asdict(s) for s in report.skipped]
    payload["model"] = asdict(record)
    status = status_path(uri, workdir)
    try:
        write_json_atomic(status, payload)
    except OSError as err:
        raise (disk_full_error(err, status) or err) from None
    return report


def _check_rows(rows: int, expected: int, uri: str) -> None:
    """Refuses to report a build whose writes did not all land (Milvus Lite answers an insert
    that failed on a full disk with success and only logs the error)."""
    if rows == expected:
        return
    if is_file_uri(uri) and disk_full(os.path.dirname(uri)):
        raise ArchiveIndexError(f"disk full writing {uri}")
    raise ArchiveIndexError(
        f"index {uri} holds {rows} rows after the build; expected {expected}: some writes did "
        "not land. Run index build again (it resumes where the index stands)"
    )


def _encode_queries(
    model_dir: str | os.PathLike[str], image_paths: Sequence[str | os.PathLike[str]]
) -> tuple[SavedModelEncoder, np.ndarray]:
    encoder = SavedModelEncoder(model_dir)
    result = encoder.encode_files(image_paths)
    if result.bad:
        position, reason = result.bad[0]
        raise ArchiveIndexError(
            f"Received: query image {str(image_paths[position])!r} that cannot be decoded "
            f"({reason}); expected a JPEG, PNG, GIF, BMP or TIFF image"
        )
    return encoder, result.packed


def search_images(
    image_paths: Sequence[str | os.PathLike[str]],
    *,
    uri: str,
    collection: str = "hpsh",
    backend: str = "milvus",
    model_dir: str | os.PathLike[str] | None = None,
    top: int = 10,
    filters: Filters | None = None,
    filter: str = "",
    nprobe: int | None = None,
) -> list[list[IndexHit]]:
    """Encodes query images with the index's model and returns their nearest indexed images.

    Args:
        image_paths: Query image files.
        uri: Index URI.
        collection: Collection name.
        backend: ``index.backend``.
        model_dir: The export to encode with; default the one recorded in the index. Another
            model than the recorded one is refused.
        top: Neighbours per query.
        filters: Structured filters on ``class``, ``path``, ``size``, ``mtime_ns``
            (:mod:`hpsh_tf2.index.backend`).
        filter: Milvus only: a boolean expression written by the user.
        nprobe: Milvus only: clusters searched with ``BIN_IVF_FLAT`` (default 16).

    Returns:
        One list of :class:`IndexHit` per query, nearest first.

    Raises:
        ModelMismatchError: ``model_dir`` is not the index's model.
        ArchiveIndexError: No index, or an undecodable query image.
    """
    with open_index(backend, uri, collection, read_only=True) as store:
        stored = store.record()
        if model_dir is None:
            model_dir = stored.export_path
        else:
            check_same_model(stored, model_record(model_dir), where=store.where)
    # Encode with no connection open: loading a large export takes longer than the gRPC
    # keep-alive that Milvus tolerates without traffic.
    _, packed = _encode_queries(model_dir, image_paths)
    options: dict[str, Any] = {"filter": filter} if filter else {}
    if nprobe is not None:
        options["nprobe"] = nprobe
    with open_index(backend, uri, collection, read_only=True) as store:
        return store.search(packed, top=top, filters=filters, **options)


def index_info(
    uri: str,
    collection: str = "hpsh",
    *,
    backend: str = "milvus",
    workdir: str | os.PathLike = ".",
) -> dict:
    """What the index holds: rows, per-label counts, the model record, the last build.

    ``classes`` counts rows per label: a row's ``class`` text is split at ``;``, and a
    multi-label row (``"Forest;River"``) counts once for each of its labels, so the counts may
    add up to more than ``rows``; ``""`` counts the rows without a class.
    """
    import json

    with open_index(backend, uri, collection, read_only=True) as store:
        record = store.record()
        classes = label_counts_of(store.class_counts())
        info: dict[str, Any] = {
            "backend": backend,
            "uri": uri,
            "collection": collection,
            "rows": store.count(),
            "classes": dict(sorted(classes.items())),
            "model": asdict(record),
        }
    status = status_path(uri, Path(workdir))
    if status.is_file():
        last = json.loads(status.read_text(encoding="utf-8"))
        info["last_build"] = {k: last[k] for k in ("images_root", "files", "added", "updated",
                                                   "removed", "unchanged", "ignored", "seconds",
                                                   "runner") if k in last}  # fmt: skip
        info["last_build"]["skipped"] = len(last.get("skipped", []))
        if last.get("labels"):
            info["last_build"]["labels"] = last["labels"]
    return info


def label_counts_of(class_counts: Mapping[str, int]) -> dict[str, int]:
    """Rows per label from rows per stored ``class`` text: ``{"A;B": 2, "A": 1}`` gives
    ``{"A": 3, "B": 2}`` (a row counts for each of its labels; ``""`` stays ``""``)."""
    counts: dict[str, int] = {}
    for text, rows in class_counts.items():
        for name in text.split(SEPARATOR) if text else [""]:
            counts[name] = counts.get(name, 0) + rows
    return counts


def hits_as_neighbours(hits: Sequence[IndexHit]) -> list[Any]:
    """Index hits as :class:`hpsh_tf2.serving.Neighbour` (label -1: the index stores names)."""
    return [
        Neighbour(rank=h.rank, distance=h.distance, label=-1, class_name=h.class_name, path=h.path)
        for h in hits
    ]
