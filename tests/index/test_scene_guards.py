"""Scene archives get the guards of file archives (issue 23 items 3 and 4, for ``--scenes``).

* one writer per index: ``index build --scenes`` holds :func:`index_writer_lock`;
* the prune guard: removing the rows of vanished scenes is refused when more than
  ``index.max_remove_fraction`` of the rows would go, or when the scenes path holds no scene,
  unless ``--prune``;
* readers (scene search, ``index info --scenes-index``) read a snapshot while a scene build
  writes, and work in a read-only folder.

Real Milvus Lite and a real second process (a scene build paused after its first batch).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the index extra is not installed (pip install .[index])")
pytest.importorskip("rasterio", reason="the geo extra is not installed (pip install .[geo])")

from hpsh_tf2.cli import main
from hpsh_tf2.index.build import PruneRefusedError
from hpsh_tf2.index.lock import IndexBusyError, index_writer_lock
from hpsh_tf2.index.scenes import (
    SceneStore,
    TilingOptions,
    build_scene_index,
    scene_collection,
    search_scenes,
)
from tests.conftest import REPO_ROOT
from tests.geo.conftest import CELL, EPSG, ORIGIN, PIXEL_M, synthetic, write_geotiff, write_mosaic
from tests.index.conftest import read_only_folder

OPTIONS = TilingOptions(tile_size=CELL, tile_stride=CELL, max_nodata_fraction=0.5)
SETS = ("--set", f"index.tile_size={CELL}", "--set", f"index.tile_stride={CELL}")
SMALL = ("a.tif", "b.tif", "c.tif")  # one tile each (smaller than a tile)
SMALL_SIDE = 64

_PAUSED_SCENE_BUILD = textwrap.dedent(
    f"""
    import sys, time
    from pathlib import Path
    from hpsh_tf2.index.scenes import TilingOptions, build_scene_index

    ready, go = Path(sys.argv[4] + "/ready"), Path(sys.argv[4] + "/go")

    def pause(written):
        ready.write_text(str(written))
        deadline = time.monotonic() + 240
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    options = TilingOptions(tile_size={CELL}, tile_stride={CELL}, max_nodata_fraction=0.5)
    report = build_scene_index(sys.argv[1], sys.argv[2], uri=sys.argv[3], options=options,
                               batch_size=4, on_batch=pause)
    print("rows", report.rows)
    """
)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def _small_centre() -> str:
    """``LON,LAT`` of the centre of a small scene (pyproj, from the fixture's UTM grid)."""
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(f"EPSG:{EPSG}", "EPSG:4326", always_xy=True)
    half = PIXEL_M * SMALL_SIDE / 2
    lon, lat = to_wgs.transform(ORIGIN[0] + half, ORIGIN[1] - half)
    return f"{lon},{lat}"


def _scenes(folder: Path, source: Path, names: tuple[str, ...]) -> Path:
    """``folder`` holding copies of some scenes of ``source`` (same ids and fingerprints)."""
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy2(source / name, folder / name)
    return folder


def _rows(uri: str) -> int:
    with SceneStore(uri, scene_collection("hpsh"), read_only=True) as store:
        return store.count()


@pytest.fixture(scope="module")
def scene_index(tmp_path_factory, tiny_export, aid_root) -> tuple[Path, Path]:
    """A scenes folder (the 9-tile mosaic and three 1-tile scenes) and its index (12 rows)."""
    root = tmp_path_factory.mktemp("guards")
    scenes = root / "scenes"
    write_mosaic(scenes)
    for seed, name in enumerate(SMALL):
        write_geotiff(scenes / name, synthetic(SMALL_SIDE, SMALL_SIDE, seed=seed))
    uri = root / "index.db"
    report = build_scene_index(tiny_export, scenes, uri=str(uri), options=OPTIONS)
    assert (report.added, report.rows) == (4, 12)
    return scenes, uri


@pytest.fixture
def index_copy(scene_index, tmp_path) -> str:
    """A copy of the module's scene index that a test may change."""
    _, uri = scene_index
    shutil.copy2(uri, tmp_path / "index.db")
    return str(tmp_path / "index.db")


def test_second_scene_build_is_refused_while_one_writes(scene_index, index_copy, tiny_export):
    scenes, _ = scene_index
    with index_writer_lock(index_copy, command="index build --scenes (test)"):
        with pytest.raises(IndexBusyError, match=r"being written by PID \d+"):
            build_scene_index(tiny_export, scenes, uri=index_copy, options=OPTIONS)
        status, out, err = _cli("index", "build", "--scenes", str(scenes), "--model",
                                str(tiny_export), "--uri", index_copy, *SETS)  # fmt: skip
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "index build --scenes (test)" in err
    again = build_scene_index(tiny_export, scenes, uri=index_copy, options=OPTIONS)
    assert (again.unchanged, again.rows) == (4, 12)


def test_scene_build_refuses_to_remove_many_rows_without_prune(
    scene_index, index_copy, tiny_export, tmp_path
):
    source, _ = scene_index
    common = ["--model", str(tiny_export), "--uri", index_copy, *SETS]

    # An empty (unmounted) scenes folder: every row would go.
    empty = tmp_path / "unmounted"
    empty.mkdir()
    status, out, err = _cli("index", "build", "--scenes", str(empty), *common)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "would remove 12 of 12 rows" in err and "holds no scenes" in err
    assert "'a.tif', 'b.tif', 'c.tif', 'mosaic.tif'" in err and "--prune" in err

    # One small scene gone: 1 of 12 rows (8%) is within index.max_remove_fraction.
    fewer = _scenes(tmp_path / "fewer", source, ("b.tif", "c.tif", "mosaic.tif"))
    status, out, err = _cli("index", "build", "--scenes", str(fewer), *common)
    assert status == 0, err
    assert "1 removed, 3 unchanged" in out and ": 11 tiles" in out

    # The mosaic gone too: 9 of 11 rows (82%) is refused, naming the scene.
    two = _scenes(tmp_path / "two", source, ("b.tif", "c.tif"))
    with pytest.raises(PruneRefusedError, match=r"would remove 9 of 11 rows .*82%.*'mosaic\.tif'"):
        build_scene_index(tiny_export, two, uri=index_copy, options=OPTIONS)
    status, out, err = _cli("index", "build", "--scenes", str(two), *common)
    assert status == 2 and "would remove 9 of 11 rows" in err and "'mosaic.tif'" in err
    assert _rows(index_copy) == 11  # nothing removed by the refused builds

    # A higher threshold lets it through, as does --prune.
    status, out, err = _cli("index", "build", "--scenes", str(two), *common,
                            "--set", "index.max_remove_fraction=0.9")  # fmt: skip
    assert status == 0, err
    assert "1 removed, 2 unchanged" in out and ": 2 tiles" in out
    status, out, err = _cli("index", "build", "--scenes", str(empty), "--prune", *common)
    assert status == 0, err
    assert "2 removed" in out and ": 0 tiles" in out


def test_scene_readers_read_while_a_scene_build_writes_and_read_only(
    scene_index, tiny_export, tmp_path
):
    scenes, _ = scene_index
    work = tmp_path / "work"
    work.mkdir()
    uri = str(work / "index.db")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_SCENE_BUILD, str(tiny_export), str(scenes), uri,
         str(work)],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    query = ["--scene", "a.tif", "--lonlat", _small_centre(), "--top", "3", *SETS]
    try:
        deadline = time.monotonic() + 240
        while not (work / "ready").exists():
            assert writer.poll() is None, writer.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the writer never reached its first batch"
            time.sleep(0.2)

        status, out, err = _cli("index", "build", "--scenes", str(scenes), "--model",
                                str(tiny_export), "--uri", uri, *SETS)  # fmt: skip
        assert status == 2, out + err
        assert f"PID {writer.pid}" in err and "being written" in err

        status, out, err = _cli("index", "search", *query, "--uri", uri)
        assert status == 0, err
        assert "a.tif  window 0,0,64,64" in out
        status, out, err = _cli("index", "info", "--scenes-index", "--json", "--uri", uri)
        assert status == 0, err
        assert json.loads(out)["rows"] >= 1  # at least the first batch
    finally:
        (work / "go").write_text("")
        stdout, stderr = writer.communicate(timeout=300)
    assert writer.returncode == 0, stderr.decode()[-2000:]
    assert "rows 12" in stdout.decode()

    # Readers in a read-only folder (nothing can be created beside the index there).
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in ("index.db", "index.db.scenes.json"):
        shutil.copy2(work / name, shared / name)
    with read_only_folder(shared) as view:
        ro = str(view / "index.db")
        status, out, err = _cli("index", "search", *query, "--uri", ro,
                                "--geojson", str(tmp_path / "out" / "places.geojson"))  # fmt: skip
        assert status == 0, err
        assert "a.tif  window 0,0,64,64" in out
        places = search_scenes(uri=ro, packed=np.zeros((1, 4), np.uint8), top=3)
        assert len(places) == 3
        status, out, err = _cli("index", "info", "--scenes-index", "--json", "--uri", ro)
        assert status == 0, err
        info = json.loads(out)
        assert (info["rows"], info["scenes"], info["last_build"]["added"]) == (12, 4, 4)
        status, out, err = _cli("index", "info", "--scenes-index", "--uri", ro)
        assert status == 0, err
        assert "12 tiles of 4 scenes" in out and "last build: 4 scenes" in out
        assert sorted(os.listdir(view)) == ["index.db", "index.db.scenes.json"]


def test_scene_info_without_an_index_says_how_to_build_one(tmp_path):
    status, out, err = _cli("index", "info", "--scenes-index", "--uri", str(tmp_path / "no.db"))
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "index build --config FILE --scenes PATH" in err
    assert not (tmp_path / "no.db").exists()
