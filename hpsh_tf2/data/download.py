"""Download and unpack public datasets, atomically and with checksum verification.

Fetched by name (:data:`DATASETS`):

- ``ucmd``: UC Merced Land Use (Yang & Newsam, 2010), the 21 class folders.
- ``ucmd_multilabel``: the 17-label table of UCMD (Chaudhuri et al., 2018) from bigearth.eu,
  ``multilabels/LandUse_Multilabeled.txt``; no checksum is published, so pass ``--checksum``
  (the archive is verified against it). Download it into the folder that holds
  ``UCMerced_LandUse`` and ``data.format: ucmd_multilabel`` finds it.
- ``bigearthnet``: BigEarthNet-S2 v1.0 (Sumbul et al., 2019), about 66 GB as ``.tar.gz``, the
  MD5 as published by TorchGeo; unpacks to ``BigEarthNet-v1.0/<patch>/``.

AID (Xia et al., 2017) is distributed through OneDrive / Baidu Pan links without a published
checksum, and MLRSNet (Qi et al., 2020) through Mendeley Data (doi:10.17632/7j9bv9vwsx) as
split archives without one: download them by hand and point ``data.root`` at the unpacked folder.

The archive is streamed to a hidden temporary file inside ``dest``, its checksum verified, then
unpacked into a hidden temporary folder inside ``dest`` and renamed into place, so a failed,
interrupted or corrupt download or extraction leaves nothing half-made behind. An archive that
already lies in ``dest`` under the expected file name (downloaded by hand) is verified and used
instead of downloading; it is kept.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import BinaryIO

from hpsh_tf2.errors import DatasetError, UsageError

__all__ = ["DATASETS", "DatasetSource", "download_dataset", "file_checksum", "parse_checksum"]

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_CHUNK = 1 << 20
_PROGRESS_INTERVAL_S = 0.5
_HEX_LENGTHS = {"md5": 32, "sha256": 64}


def _check_hex(algo: str, value: str) -> str:
    digest = value.strip().lower()
    if len(digest) != _HEX_LENGTHS[algo] or any(c not in "0123456789abcdef" for c in digest):
        raise UsageError(
            f"Received: {algo}={value!r}; expected {_HEX_LENGTHS[algo]} hexadecimal digits"
        )
    return digest


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset archive comes from and what it unpacks to.

    Attributes:
        name: Short name, e.g. ``"ucmd"``.
        url: Primary download URL of a ``.zip``, ``.tar.gz``, ``.tgz`` or ``.tar`` archive.
        filename: File name of the archive (used for a hand-downloaded copy in ``dest``).
        extracted_root: Relative POSIX path, inside the archive, of the folder holding the class
            folders, e.g. ``"UCMerced_LandUse/Images"``.
        md5: Expected MD5 of the archive (hex), or None.
        sha256: Expected SHA-256 of the archive (hex), or None. SHA-256 wins when both are set.
        mirrors: Further URLs tried in order when the primary one fails.
    """

    name: str
    url: str
    filename: str
    extracted_root: str
    md5: str | None = None
    sha256: str | None = None
    mirrors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.filename.lower().endswith(ARCHIVE_SUFFIXES) or "/" in self.filename:
            raise ValueError(
                f"Received: filename={self.filename!r}; expected a plain file name ending in "
                + ", ".join(ARCHIVE_SUFFIXES)
            )
        parts = PurePosixPath(self.extracted_root).parts
        if (
            not parts
            or self.extracted_root.startswith("/")
            or ".." in parts
            or "\\" in (self.extracted_root)
        ):
            raise ValueError(
                f"Received: extracted_root={self.extracted_root!r}; expected a relative POSIX "
                "path inside the archive"
            )
        for algo in ("md5", "sha256"):
            value = getattr(self, algo)
            if value is not None:
                object.__setattr__(self, algo, _check_hex(algo, value))
        object.__setattr__(self, "mirrors", tuple(self.mirrors))

    @property
    def checksum(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` to verify against, or None."""
        if self.sha256 is not None:
            return ("sha256", self.sha256)
        if self.md5 is not None:
            return ("md5", self.md5)
        return None


DATASETS: Mapping[str, DatasetSource] = MappingProxyType(
    {
        "ucmd": DatasetSource(
            name="ucmd",
            url="http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip",
            filename="UCMerced_LandUse.zip",
            extracted_root="UCMerced_LandUse/Images",
            # MD5 as published by TorchGeo (microsoft/torchgeo, torchgeo/datasets/ucmerced.py,
            # class UCMerced), for both this URL and its Hugging Face mirror below.
            md5="5b7ec56793786b6dc8a908e8854ac0e4",
            mirrors=(
                "https://hf.co/datasets/torchgeo/ucmerced/resolve/"
                "7c5ef3454d9b1cccfa7ccde0c01fc8f00a45909a/UCMerced_LandUse.zip",
            ),
        ),
        "ucmd_multilabel": DatasetSource(
            name="ucmd_multilabel",
            # Linked from http://bigearth.eu/datasets ("Download the Labels"); no checksum is
            # published: download_dataset requires one (--checksum).
            url="http://bigearth.eu/assets/docs/multilabels.zip",
            filename="multilabels.zip",
            extracted_root="multilabels",
        ),
        "bigearthnet": DatasetSource(
            name="bigearthnet",
            url="https://bigearth.net/downloads/BigEarthNet-S2-v1.0.tar.gz",
            filename="BigEarthNet-S2-v1.0.tar.gz",
            extracted_root="BigEarthNet-v1.0",
            # MD5 as published by TorchGeo (microsoft/torchgeo, torchgeo/datasets/bigearthnet.py,
            # class BigEarthNet, metadata["s2"]).
            md5="5a64e9ce38deb036a435a7b59494924c",
        ),
    }
)
"""Datasets :func:`download_dataset` knows by name (read-only)."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Parse ``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare hex digest (32 = MD5, 64 = SHA-256).

    Returns:
        ``(algorithm, lower-case hex digest)``.

    Raises:
        TypeError: If ``checksum`` is not a string.
        ValueError: If the string is not one of those forms.
    """
    if not isinstance(checksum, str):
        raise TypeError(f"Received: checksum={checksum!r}; expected a string")
    algo, sep, digest = checksum.partition(":")
    if not sep:
        digest = algo
        algo = {32: "md5", 64: "sha256"}.get(len(digest.strip()), "")
    algo = algo.strip().lower()
    if algo not in _HEX_LENGTHS:
        raise UsageError(
            f"Received: checksum={checksum!r}; expected 'md5:<32 hex>', 'sha256:<64 hex>' or a "
            "bare MD5/SHA-256 hex digest"
        )
    return algo, _check_hex(algo, digest)


def file_checksum(path: str | os.PathLike[str], algo: str) -> str:
    """Hex digest of a file (``algo`` is ``"md5"`` or ``"sha256"``)."""
    digest = hashlib.new(algo)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- downloading


class _Progress:
    """Throttled one-line progress on stderr."""

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < _PROGRESS_INTERVAL_S):
            return
        self.last = now
        size = f"{done / 2**20:.1f}"
        if self.total:
            size += f"/{self.total / 2**20:.1f} MiB ({100 * done / self.total:.0f}%)"
        else:
            size += " MiB"
        sys.stderr.write(f"\r{self.label}: {size}" + ("\n" if final else ""))
        sys.stderr.flush()


def _stream(
    response: http.client.HTTPResponse, out: BinaryIO, algo: str, progress: _Progress
) -> str:
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    progress.total = total
    digest = hashlib.new(algo)
    done = 0
    for block in iter(lambda: response.read(_CHUNK), b""):
        out.write(block)
        digest.update(block)
        done += len(block)
        progress.update(done)
    progress.update(done, final=True)
    if total is not None and done != total:
        raise DatasetError(f"download interrupted: received {done} of {total} bytes")
    return digest.hexdigest()


def _fetch(
    url: str, target: Path, checksum: tuple[str, str], timeout: float, progress: bool
) -> None:
    """Download ``url`` into ``target`` and verify it; raises DatasetError on any failure."""
    algo, expected = checksum
    opener = urllib.request.build_opener()
    request = urllib.request.Request(url, headers={"User-Agent": "hpsh-tf2"})
    try:
        with opener.open(request, timeout=timeout) as response, open(target, "wb") as out:
            got = _stream(response, out, algo, _Progress(target.name, None, progress))
    except urllib.error.HTTPError as err:
        raise DatasetError(f"HTTP {err.code} ({err.reason}) from {url}") from err
    except urllib.error.URLError as err:
        raise DatasetError(f"cannot reach {url}: {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:
        raise DatasetError(f"download from {url} failed: {err!r}") from err
    if got != expected:
        raise DatasetError(f"{algo} mismatch for {url}: expected {expected}, got {got}")


def _download(
    urls: Sequence[str], dest: Path, checksum: tuple[str, str], timeout: float, progress: bool
) -> Path:
    """Download the first URL that works into a hidden temp file in ``dest``."""
    errors = []
    for url in urls:
        fd, name = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest)
        os.close(fd)
        target = Path(name)
        try:
            _fetch(url, target, checksum, timeout, progress)
        except DatasetError as err:
            target.unlink(missing_ok=True)
            errors.append(str(err))
            continue
        return target
    raise DatasetError("Download failed (nothing was kept): " + "; ".join(errors))


# --------------------------------------------------------------------------- extracting


def _safe_member(name: str, root: Path) -> None:
    normalised = name.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    drive = bool(parts) and len(parts[0]) >= 2 and parts[0][1] == ":"
    target = os.path.realpath(os.path.join(root, normalised))
    inside = target == str(root) or target.startswith(str(root) + os.sep)
    if normalised.startswith("/") or drive or ".." in parts or not inside:
        raise DatasetError(
            f"Archive member {name!r} would be written outside the destination folder; "
            "refusing to extract (possible zip-slip attack)"
        )


def _extract_tar(archive: Path, real_root: Path) -> None:
    with tarfile.open(archive) as handle:
        members = handle.getmembers()
        for member in members:
            _safe_member(member.name, real_root)
            if not (member.isfile() or member.isdir()):
                raise DatasetError(
                    f"Archive member {member.name!r} is a link or special file; refusing to "
                    "extract (expected plain files and folders)"
                )
        handle.extractall(real_root, members=members, filter="data")


def _extract(archive: Path, into: Path, filename: str) -> None:
    real_root = Path(os.path.realpath(into))
    if not filename.lower().endswith(".zip"):
        try:
            _extract_tar(archive, real_root)
        except (tarfile.TarError, zlib.error, EOFError, OSError) as err:
            raise DatasetError(f"Cannot extract {filename!r}: {err}") from err
        return
    try:
        with zipfile.ZipFile(archive) as handle:
            for member in handle.infolist():
                _safe_member(member.filename, real_root)
            handle.extractall(real_root)
    except (  # corrupt data, unsupported compression, encrypted members, disk errors
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        OSError,
        NotImplementedError,
        RuntimeError,
    ) as err:
        raise DatasetError(f"Cannot extract {archive.name!r}: {err}") from err


def _install(archive: Path, source: DatasetSource, dest: Path) -> Path:
    """Extract into a hidden temp folder in ``dest``, then rename the top folder into place."""
    top = PurePosixPath(source.extracted_root).parts[0]
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        _extract(archive, staging, source.filename)
        if not staging.joinpath(*PurePosixPath(source.extracted_root).parts).is_dir():
            raise DatasetError(
                f"Archive {archive.name!r} has no folder {source.extracted_root!r}; expected the "
                f"{source.name} layout"
            )
        os.rename(staging / top, dest / top)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest.joinpath(*PurePosixPath(source.extracted_root).parts)


# --------------------------------------------------------------------------- public entry


def _resolve_source(name_or_source: str | DatasetSource) -> DatasetSource:
    if isinstance(name_or_source, DatasetSource):
        return name_or_source
    if isinstance(name_or_source, str):
        key = name_or_source.strip().lower()
        if key in DATASETS:
            return DATASETS[key]
        by_hand = " (AID must be downloaded by hand, see docs/reference/data.md#download)"
        hint = by_hand if key == "aid" else ""
        raise UsageError(
            f"Received: name_or_source={name_or_source!r}; expected one of "
            f"{sorted(DATASETS)} or a DatasetSource{hint}"
        )
    raise TypeError(
        f"Received: name_or_source of type {type(name_or_source).__name__}; expected a dataset "
        "name or a DatasetSource"
    )


def _expected_checksum(source: DatasetSource, checksum: str | None) -> tuple[str, str]:
    expected = parse_checksum(checksum) if checksum is not None else source.checksum
    if expected is None:
        raise UsageError(
            f"Received: checksum=None and source {source.name!r} has none; expected a checksum "
            "('md5:<hex>' or 'sha256:<hex>') so the archive can be verified"
        )
    return expected


def _local_archive(path: Path, checksum: tuple[str, str]) -> Path:
    algo, expected = checksum
    got = file_checksum(path, algo)
    if got != expected:
        raise DatasetError(
            f"Archive {str(path)!r} already in the destination has {algo} {got}; expected "
            f"{expected}. Delete it (or fix the checksum) and try again."
        )
    return path


def download_dataset(
    name_or_source: str | DatasetSource,
    dest: str | os.PathLike[str],
    *,
    url: str | None = None,
    checksum: str | None = None,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download, verify and unpack a dataset archive; return its image root.

    Args:
        name_or_source: A key of :data:`DATASETS` (``"ucmd"``) or a :class:`DatasetSource`.
        dest: Folder to unpack into (created if needed).
        url: Download from this URL instead of the source's URL and mirrors.
        checksum: ``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare digest, overriding the
            source's checksum (required when the source has none).
        timeout: Socket timeout in seconds for each connection attempt.
        progress: Print a progress line on stderr.

    Returns:
        ``dest / source.extracted_root`` (e.g. ``dest/UCMerced_LandUse/Images``), the folder
        holding one folder per class. Returned at once, without network access, when it already
        exists.

    Raises:
        DatasetError: If every URL fails (HTTP error, unreachable, interrupted, checksum
            mismatch), the archive is corrupt or has unsafe member paths, or the archive's top
            folder already exists in ``dest`` without the expected image root.
        ValueError: For an unknown dataset name, a malformed checksum or a bad timeout.
    """
    source = _resolve_source(name_or_source)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"Received: timeout={timeout!r}; expected a positive number of seconds")
    expected = _expected_checksum(source, checksum)
    target_dir = Path(dest).expanduser()
    image_root = target_dir.joinpath(*PurePosixPath(source.extracted_root).parts)
    if image_root.is_dir():
        return image_root
    top = target_dir / PurePosixPath(source.extracted_root).parts[0]
    if top.exists():
        raise DatasetError(
            f"{str(top)!r} exists but has no {source.extracted_root!r}; remove it (it may be a "
            "partial copy) and try again"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    local = target_dir / source.filename
    if local.is_file():
        return _install(_local_archive(local, expected), source, target_dir)
    urls = [url] if url is not None else [source.url, *source.mirrors]
    archive = _download(urls, target_dir, expected, timeout, progress)
    try:
        return _install(archive, source, target_dir)
    finally:
        archive.unlink(missing_ok=True)
