"""Tests of hpsh_tf2.data.download against a loopback HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpsh_tf2.data.download import (
    DATASETS,
    DatasetSource,
    download_dataset,
    file_checksum,
    parse_checksum,
)
from hpsh_tf2.data.formats import ReadRequest, read_bigearthnet, read_ucmd_multilabel
from hpsh_tf2.data.scan import scan_dataset
from hpsh_tf2.errors import DatasetError
from tests.data.conftest import noisy_rgb, write_bigearthnet_patch

ROOT = "UCMerced_LandUse/Images"


def _tiff_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noisy_rgb(8, 8, seed)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return buffer.getvalue()


UCMD_LIKE = _zip(
    {
        f"{ROOT}/agricultural/agricultural00.tif": _tiff_bytes(0),
        f"{ROOT}/agricultural/agricultural01.tif": _tiff_bytes(1),
        f"{ROOT}/airplane/airplane00.tif": _tiff_bytes(2),
        f"{ROOT}/airplane/airplane01.tif": _tiff_bytes(3),
    }
)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Server:
    """Serves ``files`` (path -> bytes) on 127.0.0.1; ``short`` paths lie about their length."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                extra = 1000 if self.path in server.short else 0
                self.send_header("Content-Length", str(len(data) + extra))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    srv = _Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    srv.thread.join(timeout=5)


def _source(
    server: _Server, path: str = "/ucmd.zip", data: bytes = UCMD_LIKE, **kw
) -> DatasetSource:
    server.files[path] = data
    fields = {"md5": _md5(data)} | kw
    return DatasetSource(
        name="ucmd-test",
        url=server.url(path),
        filename="UCMerced_LandUse.zip",
        extracted_root=ROOT,
        **fields,
    )


def _visible_and_hidden(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_registry_ucmd() -> None:
    ucmd = DATASETS["ucmd"]
    assert ucmd.url == "http://weegee.vision.ucmerced.edu/datasets/UCMerced_LandUse.zip"
    assert ucmd.filename == "UCMerced_LandUse.zip"
    assert ucmd.extracted_root == ROOT
    assert ucmd.checksum == ("md5", "5b7ec56793786b6dc8a908e8854ac0e4")
    with pytest.raises(TypeError):
        DATASETS["x"] = ucmd  # read-only registry


def test_download_success_and_scan(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "datasets"
    root = download_dataset(_source(server), dest, progress=False)
    assert root == dest / "UCMerced_LandUse" / "Images"
    assert _visible_and_hidden(dest) == ["UCMerced_LandUse"]  # temp files gone
    scan = scan_dataset(root)
    assert scan.class_names == ("agricultural", "airplane")
    assert scan.counts_per_class() == {"agricultural": 2, "airplane": 2}
    with Image.open(root / "airplane" / "airplane01.tif") as img:
        np.testing.assert_array_equal(np.asarray(img), noisy_rgb(8, 8, 3))


def test_download_progress_goes_to_stderr(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download_dataset(_source(server), tmp_path, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "(100%)" in captured.err


def test_download_skipped_when_already_extracted(server: _Server, tmp_path: Path) -> None:
    source = _source(server)
    first = download_dataset(source, tmp_path, progress=False)
    server.files.clear()  # a second download would now fail with 404
    assert download_dataset(source, tmp_path, progress=False) == first
    assert server.requests == ["/ucmd.zip"]


def test_download_sha256_and_explicit_checksum(server: _Server, tmp_path: Path) -> None:
    sha = hashlib.sha256(UCMD_LIKE).hexdigest()
    source = _source(server, md5=None, sha256=sha)
    assert source.checksum == ("sha256", sha)
    download_dataset(source, tmp_path / "a", progress=False)
    other = _source(server, md5="0" * 32)
    download_dataset(other, tmp_path / "b", checksum=f"sha256:{sha.upper()}", progress=False)
    assert (tmp_path / "b" / ROOT).is_dir()


def test_wrong_checksum_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    source = _source(server, md5="0" * 32)
    with pytest.raises(DatasetError) as info:
        download_dataset(source, tmp_path / "d", progress=False)
    message = str(info.value)
    assert "expected 00000000000000000000000000000000" in message
    assert f"got {_md5(UCMD_LIKE)}" in message
    assert _visible_and_hidden(tmp_path / "d") == []


def test_truncated_zip_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    broken = UCMD_LIKE[: len(UCMD_LIKE) // 2]
    with pytest.raises(DatasetError, match="Cannot extract"):
        download_dataset(_source(server, data=broken), tmp_path, progress=False)
    assert _visible_and_hidden(tmp_path) == []


def test_corrupt_member_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    data = bytearray(_zip({f"{ROOT}/a/x.tif": b"A" * 5000, f"{ROOT}/b/y.tif": b"B" * 5000}))
    position = data.index(b"x.tif") + len("x.tif") + 2  # inside the deflated data of x.tif
    data[position] ^= 0xFF
    with pytest.raises(DatasetError, match="Cannot extract"):
        download_dataset(_source(server, data=bytes(data)), tmp_path, progress=False)
    assert _visible_and_hidden(tmp_path) == []


def test_interrupted_download_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    source = _source(server)
    server.short.add("/ucmd.zip")
    with pytest.raises(DatasetError, match=r"received \d+ of \d+ bytes"):
        download_dataset(source, tmp_path, progress=False, timeout=5)
    assert _visible_and_hidden(tmp_path) == []


def test_http_404_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    source = _source(server)
    missing = server.url("/missing.zip")
    with pytest.raises(DatasetError, match=r"HTTP 404 \(Not Found\) from .*missing\.zip"):
        download_dataset(source, tmp_path / "d", url=missing, progress=False)
    assert _visible_and_hidden(tmp_path / "d") == []


def test_unreachable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    source = DatasetSource("x", "http://127.0.0.1:9/x.zip", "x.zip", "x", md5="0" * 32)
    with pytest.raises(DatasetError, match="cannot reach"):
        download_dataset(source, tmp_path, progress=False, timeout=5)
    assert _visible_and_hidden(tmp_path) == []


def test_mirror_used_when_primary_fails(server: _Server, tmp_path: Path) -> None:
    server.files["/mirror.zip"] = UCMD_LIKE
    source = DatasetSource(
        name="m",
        url=server.url("/gone.zip"),
        filename="m.zip",
        extracted_root=ROOT,
        md5=_md5(UCMD_LIKE),
        mirrors=(server.url("/mirror.zip"),),
    )
    assert download_dataset(source, tmp_path, progress=False).is_dir()
    assert server.requests == ["/gone.zip", "/mirror.zip"]


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", f"{ROOT}/../../../evil.txt"])
def test_zip_slip_rejected(server: _Server, tmp_path: Path, member: str) -> None:
    data = _zip({f"{ROOT}/a/ok.tif": _tiff_bytes(0), member: b"evil"})
    dest = tmp_path / "inner" / "dest"
    with pytest.raises(DatasetError, match="outside the destination"):
        download_dataset(_source(server, data=data), dest, progress=False)
    assert _visible_and_hidden(dest) == []
    assert not list(tmp_path.rglob("evil.txt"))


def test_archive_without_expected_root(server: _Server, tmp_path: Path) -> None:
    data = _zip({"Other/Images/a/x.tif": _tiff_bytes(0)})
    with pytest.raises(DatasetError, match="has no folder 'UCMerced_LandUse/Images'"):
        download_dataset(_source(server, data=data), tmp_path, progress=False)
    assert _visible_and_hidden(tmp_path) == []


def test_local_archive_used_and_kept(server: _Server, tmp_path: Path) -> None:
    source = _source(server)
    (tmp_path / source.filename).write_bytes(UCMD_LIKE)
    root = download_dataset(source, tmp_path, progress=False)
    assert root.is_dir()
    assert server.requests == []
    assert _visible_and_hidden(tmp_path) == ["UCMerced_LandUse", "UCMerced_LandUse.zip"]


def test_local_archive_with_wrong_checksum(server: _Server, tmp_path: Path) -> None:
    source = _source(server)
    (tmp_path / source.filename).write_bytes(b"not the archive")
    with pytest.raises(DatasetError, match="already in the destination"):
        download_dataset(source, tmp_path, progress=False)
    assert _visible_and_hidden(tmp_path) == ["UCMerced_LandUse.zip"]


def test_partial_top_folder_is_an_error(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "UCMerced_LandUse").mkdir()
    with pytest.raises(DatasetError, match="remove it"):
        download_dataset(_source(server), tmp_path, progress=False)
    assert server.requests == []


def test_unknown_names_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="by hand"):
        download_dataset("aid", tmp_path)
    with pytest.raises(ValueError, match="'nope'"):
        download_dataset("nope", tmp_path)
    with pytest.raises(TypeError, match="int"):
        download_dataset(3, tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        download_dataset("ucmd", tmp_path, timeout=0)
    no_sum = DatasetSource("x", "http://127.0.0.1:9/x.zip", "x.zip", "x")
    with pytest.raises(ValueError, match="checksum=None"):
        download_dataset(no_sum, tmp_path)
    assert _visible_and_hidden(tmp_path) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"filename": "x.rar"}, "filename"),
        ({"extracted_root": "../x"}, "extracted_root"),
        ({"extracted_root": "/x"}, "extracted_root"),
        ({"md5": "xyz"}, "md5"),
        ({"sha256": "a" * 63}, "sha256"),
    ],
)
def test_dataset_source_validation(kwargs: dict, match: str) -> None:
    fields = {"name": "x", "url": "http://h/x.zip", "filename": "x.zip", "extracted_root": "x"}
    with pytest.raises(ValueError, match=match):
        DatasetSource(**(fields | kwargs))


def test_parse_checksum() -> None:
    md5 = "5B7EC56793786B6DC8A908E8854AC0E4"
    assert parse_checksum(md5) == ("md5", md5.lower())
    assert parse_checksum(f"md5:{md5}") == ("md5", md5.lower())
    assert parse_checksum("sha256:" + "ab" * 32) == ("sha256", "ab" * 32)
    assert parse_checksum("cd" * 32) == ("sha256", "cd" * 32)
    for bad in ["sha1:" + "a" * 40, "abc", "md5:" + "g" * 32]:
        with pytest.raises(ValueError, match="Received"):
            parse_checksum(bad)


def test_file_checksum(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello world")
    assert file_checksum(path, "md5") == "5eb63bbbe01eeed093cb22bb8f5acdc3"
    assert file_checksum(path, "sha256") == hashlib.sha256(b"hello world").hexdigest()


def test_cli_download_verb_with_url_and_checksum(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hpsh_tf2 import cli

    server.files["/mirror.zip"] = UCMD_LIKE
    url = server.url("/mirror.zip")
    argv = ["download", "ucmd", "--dest", str(tmp_path), "--url", url]
    assert cli.main([*argv, "--checksum", f"md5:{_md5(UCMD_LIKE)}"]) == 0
    out = capsys.readouterr().out
    assert f"data.root={tmp_path / ROOT}" in out
    assert (tmp_path / ROOT / "airplane" / "airplane01.tif").is_file()
    # A wrong checksum is a clean error (exit 2) that leaves nothing in a fresh folder.
    bad = tmp_path / "bad"
    code = cli.main(
        ["download", "ucmd", "--dest", str(bad), "--url", url, "--checksum", "md5:" + "0" * 32]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"expected {'0' * 32}, got {_md5(UCMD_LIKE)}" in err
    assert _visible_and_hidden(bad) == []


def test_cli_download_dest_from_config_data_root(server: _Server, tmp_path: Path) -> None:
    from hpsh_tf2 import cli

    server.files["/ucmd.zip"] = UCMD_LIKE
    config = tmp_path / "ucmd.yaml"
    config.write_text(f"data:\n  root: {tmp_path / 'data' / ROOT}\n")
    argv = ["download", "ucmd", "--config", str(config), "--url", server.url("/ucmd.zip")]
    assert cli.main([*argv, "--checksum", f"md5:{_md5(UCMD_LIKE)}"]) == 0
    assert (tmp_path / "data" / ROOT / "airplane" / "airplane01.tif").is_file()
    # A data.root that does not end with the archive's image folder cannot give a --dest.
    config.write_text(f"data:\n  root: {tmp_path / 'elsewhere'}\n")
    assert cli.main(argv) == 2


# --------------------------------------------------------------------------- multi-label sources


def test_registry_multi_label_sources() -> None:
    ben = DATASETS["bigearthnet"]
    assert ben.url == "https://bigearth.net/downloads/BigEarthNet-S2-v1.0.tar.gz"
    assert ben.extracted_root == "BigEarthNet-v1.0"
    assert ben.checksum == ("md5", "5a64e9ce38deb036a435a7b59494924c")
    labels = DATASETS["ucmd_multilabel"]
    assert labels.url == "http://bigearth.eu/assets/docs/multilabels.zip"
    assert labels.checksum is None  # none published: the user must pass one


def test_ucmd_multilabel_needs_a_checksum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="checksum=None"):
        download_dataset("ucmd_multilabel", tmp_path)
    assert _visible_and_hidden(tmp_path) == []


def _tar_gz(folder: Path, arcname: str, extra: tarfile.TarInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as handle:
        handle.add(folder, arcname=arcname)
        if extra is not None:
            handle.addfile(extra, io.BytesIO(b"x") if extra.isfile() else None)
    return buffer.getvalue()


def _ben_archive(tmp_path: Path, extra: tarfile.TarInfo | None = None) -> bytes:
    staging = tmp_path / "staging"
    write_bigearthnet_patch(staging, "S2A_p1", ["Pastures", "Sea and ocean"], seed=1)
    write_bigearthnet_patch(staging, "S2A_p2", ["Pastures"], seed=2)
    return _tar_gz(staging, "BigEarthNet-v1.0", extra)


def _ben_source(server: _Server, data: bytes) -> DatasetSource:
    server.files["/ben.tar.gz"] = data
    return DatasetSource(
        name="ben-test",
        url=server.url("/ben.tar.gz"),
        filename="BigEarthNet-S2-v1.0.tar.gz",
        extracted_root="BigEarthNet-v1.0",
        md5=_md5(data),
    )


def test_bigearthnet_tar_gz_download_then_read(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "datasets"
    root = download_dataset(_ben_source(server, _ben_archive(tmp_path)), dest, progress=False)
    assert root == dest / "BigEarthNet-v1.0"
    assert _visible_and_hidden(dest) == ["BigEarthNet-v1.0"]
    scan = read_bigearthnet(ReadRequest(root=str(root), cache_dir=str(tmp_path / "chips")))
    assert scan.paths == ("S2A_p1.png", "S2A_p2.png")
    assert scan.class_names == ("Pastures", "Sea and ocean")


@pytest.mark.parametrize("kind", ["symlink", "escape"])
def test_unsafe_tar_members_leave_nothing(server: _Server, tmp_path: Path, kind: str) -> None:
    if kind == "symlink":
        extra = tarfile.TarInfo("BigEarthNet-v1.0/link")
        extra.type, extra.linkname = tarfile.SYMTYPE, "/etc/passwd"
        match = "link or special file"
    else:
        extra = tarfile.TarInfo("../evil.txt")
        extra.size = 1
        match = "outside the destination"
    dest = tmp_path / "datasets"
    with pytest.raises(DatasetError, match=match):
        download_dataset(_ben_source(server, _ben_archive(tmp_path, extra)), dest, progress=False)
    assert _visible_and_hidden(dest) == []
    assert not (tmp_path / "evil.txt").exists()


def test_truncated_tar_gz_leaves_nothing(server: _Server, tmp_path: Path) -> None:
    data = _ben_archive(tmp_path)[:-200]
    dest = tmp_path / "datasets"
    with pytest.raises(DatasetError, match="Cannot extract"):
        download_dataset(_ben_source(server, data), dest, progress=False)
    assert _visible_and_hidden(dest) == []


def test_ucmd_multilabel_table_download_is_found_by_the_reader(
    server: _Server, tmp_path: Path
) -> None:
    dest = tmp_path / "data"
    images = download_dataset(_source(server), dest, progress=False)
    table = "IMAGE\\LABEL\tairplane\tcars\nagricultural00\t0\t1\nairplane00\t1\t1\n"
    archive = _zip({"multilabels/LandUse_Multilabeled.txt": table.encode()})
    server.files["/multilabels.zip"] = archive
    source = DatasetSource(
        name="labels-test",
        url=server.url("/multilabels.zip"),
        filename="multilabels.zip",
        extracted_root="multilabels",
    )
    sha = hashlib.sha256(archive).hexdigest()
    folder = download_dataset(source, dest, checksum=f"sha256:{sha}", progress=False)
    assert (folder / "LandUse_Multilabeled.txt").is_file()
    scan = read_ucmd_multilabel(ReadRequest(root=str(images)))
    assert scan.class_names == ("airplane", "cars")
    assert scan.paths == ("agricultural/agricultural00.tif", "airplane/airplane00.tif")
    assert scan.labels.tolist() == [[0, 1], [1, 1]]
