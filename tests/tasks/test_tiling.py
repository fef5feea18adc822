"""tasks/tiling.py: TileImage on real rasters, into files and PostGIS (the grid is tested in
tests/footprints/test_tiling.py)."""
import errno
import json
import os
import subprocess
from pathlib import Path

import luigi
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from footprints import tiling as tiling_lib
from footprints.errors import InputError
from footprints.tiling import write_tiff as real_write_tiff
from tasks.tiling import TileImage

# ---------------------------------------------------------------- real SpaceNet chip


def _run(task):
    assert luigi.build([task], local_scheduler=True, log_level="WARNING"), f"{task} failed"


def test_spacenet_tiles_equal_solaris(pg, workdir, luigi_config, fixtures_dir):
    luigi_config("tiling", "tile_size", 90)
    luigi_config("tiling", "overlap", 0)
    src = fixtures_dir / "imagery" / "sample_geotiff.tif"
    task = TileImage(image="sample_geotiff", path=str(src))
    _run(task)
    index = json.loads(Path(task.output().path).read_text())
    assert len(index["tiles"]) == 100
    expected_dir = fixtures_dir / "tiling" / "rastertile_test_expected"
    for t in index["tiles"]:
        with rasterio.open(Path(task.output().path).parent / t["path"]) as tile:
            arr, b = tile.read(), tile.bounds
            assert tile.crs.to_epsg() == 32616 and tile.nodata == 0 and tile.dtypes[0] == "uint16"
        with rasterio.open(expected_dir / f"sample_geotiff_{int(b.left)}_{int(b.top)}.tif") as exp:
            assert exp.bounds == b
            np.testing.assert_array_equal(arr, exp.read())
    with pg.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT srid), min(srid) FROM tiles WHERE image = 'sample_geotiff'")
        assert cur.fetchone() == (100, 1, 32616)
        cur.execute("SELECT ST_Area(footprint_native) FROM tiles LIMIT 1")
        assert cur.fetchone()[0] == pytest.approx(45 * 45)
    geo = json.loads((Path(task.output().path).parent / "index.geojson").read_text())
    assert len(geo["features"]) == 100


def test_custom_crs_preserved(pg, workdir, luigi_config, fixtures_dir):
    luigi_config("tiling", "tile_size", 200)
    luigi_config("tiling", "overlap", 20)
    src = fixtures_dir / "imagery" / "sample_geotiff_custom_proj.tif"
    task = TileImage(image="custom", path=str(src))
    _run(task)
    with rasterio.open(src) as s:
        crs, nodata = s.crs, s.nodata
    index = json.loads(Path(task.output().path).read_text())
    assert len(index["tiles"]) == 9
    for t in index["tiles"]:
        with rasterio.open(Path(task.output().path).parent / t["path"]) as tile:
            assert tile.crs == crs and tile.crs.to_epsg() is None
            assert tile.nodata == nodata and tile.count == 3 and tile.dtypes[0] == "int16"
    with pg.cursor() as cur:
        cur.execute("SELECT DISTINCT t.srid, s.auth_name FROM tiles t JOIN spatial_ref_sys s USING (srid)")
        rows = cur.fetchall()
    assert len(rows) == 1 and rows[0][0] >= 900000 and rows[0][1] == "footprints"


def _write(path, arr, crs="EPSG:32616", nodata=None, transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)):
    prof = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
            "dtype": arr.dtype.name, "transform": transform, "nodata": nodata}
    if crs:
        prof["crs"] = CRS.from_user_input(crs)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)


@pytest.mark.parametrize("bands,dtype", [(1, "uint8"), (3, "uint16"), (8, "uint16")])
def test_bands_and_dtypes_roundtrip(pg, workdir, luigi_config, tmp_path, bands, dtype):
    luigi_config("tiling", "tile_size", 64)
    luigi_config("tiling", "overlap", 16)
    rng = np.random.default_rng(bands)
    arr = rng.integers(0, 60000 if dtype == "uint16" else 255, (bands, 150, 130)).astype(dtype)
    src = tmp_path / "img.tif"
    _write(src, arr, nodata=0)
    task = TileImage(image=f"img{bands}", path=str(src))
    _run(task)
    index = json.loads(Path(task.output().path).read_text())
    rebuilt = np.zeros_like(arr)
    for t in index["tiles"]:
        with rasterio.open(Path(task.output().path).parent / t["path"]) as tile:
            assert tile.count == bands and tile.dtypes[0] == dtype and tile.nodata == 0
            data = tile.read()
            assert tile.transform == Affine(*t["transform"])
        rebuilt[:, t["row_off"]:t["row_off"] + t["height"], t["col_off"]:t["col_off"] + t["width"]] = data
    np.testing.assert_array_equal(rebuilt, arr)


def test_rerun_is_a_noop_and_changed_parameters_get_new_output(pg, workdir, luigi_config, tmp_path):
    src = tmp_path / "img.tif"
    _write(src, np.ones((1, 100, 100), np.uint8))
    luigi_config("tiling", "tile_size", 64)
    luigi_config("tiling", "overlap", 0)
    task = TileImage(image="img", path=str(src))
    _run(task)
    first_dir = Path(task.output().path).parent
    first = {p: p.stat().st_mtime_ns for p in first_dir.iterdir()}
    _run(TileImage(image="img", path=str(src)))
    assert {p: p.stat().st_mtime_ns for p in Path(task.output().path).parent.iterdir()} == first
    luigi_config("tiling", "overlap", 8)
    task2 = TileImage(image="img", path=str(src))
    assert not task2.complete()
    _run(task2)
    assert Path(task2.output().path).parent != first_dir
    assert {p: p.stat().st_mtime_ns for p in first_dir.iterdir()} == first, "old output kept as it was"
    with pg.cursor() as cur:
        cur.execute("SELECT tiling, count(*) FROM tiles GROUP BY tiling ORDER BY tiling")
        assert cur.fetchall() == [("ts64_ov0", 4), ("ts64_ov8", 4)]


# ---------------------------------------------------------------- bad input


def test_bad_input_writes_nothing_and_others_go_through(pg, workdir, luigi_config, tmp_path):
    luigi_config("tiling", "tile_size", 32)
    luigi_config("tiling", "overlap", 0)
    good = tmp_path / "good.tif"
    _write(good, np.ones((1, 64, 64), np.uint8))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"")
    nocrs = tmp_path / "nocrs.tif"
    _write(nocrs, np.ones((1, 64, 64), np.uint8), crs=None)
    tasks = [TileImage(image="bad", path=str(bad)), TileImage(image="nocrs", path=str(nocrs)),
             TileImage(image="good", path=str(good))]
    assert not luigi.build(tasks, local_scheduler=True, log_level="CRITICAL")
    assert tasks[2].complete()
    assert not (workdir / "tiles" / "bad").exists() or not any((workdir / "tiles" / "bad").rglob("*.tif"))
    assert not (workdir / "tiles" / "nocrs").exists() or not any((workdir / "tiles" / "nocrs").rglob("*.tif"))
    with pg.cursor() as cur:
        cur.execute("SELECT DISTINCT image FROM tiles")
        assert cur.fetchall() == [("good",)]


# ---------------------------------------------------------------- bad inputs (issue 11) through Luigi


class _Failures:
    """Collects the exceptions of failed tasks (luigi's FAILURE event), then unregisters."""

    def __init__(self):
        self.errors: dict[str, Exception] = {}

    def __enter__(self):
        luigi.Task.event_handler(luigi.Event.FAILURE)(self._record)
        return self

    def _record(self, task, exc):
        self.errors[task.task_id] = exc

    def __exit__(self, *exc):
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.FAILURE].discard(self._record)


def _geotiff(path, arr, crs="EPSG:32616", nodata=None):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype.name, crs=CRS.from_user_input(crs) if crs else None, nodata=nodata,
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(arr)


def test_bad_rasters_fail_alone_with_one_line_errors_and_good_ones_go_through(pg, tmp_path, workdir, luigi_config):
    luigi_config("tiling", "tile_size", 32)
    luigi_config("tiling", "overlap", 8)
    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    good = ["plain", "small", "float32 scene", "int16", "pan", "rgba", "Zürich 'x'; DROP TABLE tiles;--"]
    _geotiff(img / "plain.tif", rng.integers(1, 255, (3, 60, 70), dtype=np.uint8))
    _geotiff(img / "small.tif", rng.integers(1, 255, (3, 10, 12), dtype=np.uint8))  # < one tile: one tile
    _geotiff(img / "float32 scene.tif", rng.random((3, 40, 40), dtype=np.float32))
    _geotiff(img / "int16.tif", rng.integers(-500, 3000, (3, 40, 40), dtype=np.int16))
    _geotiff(img / "pan.tif", rng.integers(0, 4000, (1, 40, 40), dtype=np.uint16))
    _geotiff(img / "rgba.tif", rng.integers(0, 255, (4, 40, 40), dtype=np.uint8))
    _geotiff(img / "Zürich 'x'; DROP TABLE tiles;--.tif", rng.integers(1, 255, (3, 40, 40), dtype=np.uint8))
    bad = {"empty": "file is empty (0 bytes)", "nocrs": "raster has no CRS",
           "blank": "every pixel is nodata", "cut": "truncated or corrupt", "png": "is a PNG file"}
    (img / "empty.tif").write_bytes(b"")
    _geotiff(img / "nocrs.tif", rng.integers(1, 255, (3, 40, 40), dtype=np.uint8), crs=None)
    _geotiff(img / "blank.tif", np.zeros((3, 40, 40), np.uint8), nodata=0)
    _geotiff(img / "cut.tif", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    data = (img / "cut.tif").read_bytes()
    (img / "cut.tif").write_bytes(data[: len(data) // 2])
    with rasterio.open(tmp_path / "png.png", "w", driver="PNG", width=8, height=8, count=3, dtype="uint8") as d:
        d.write(np.zeros((3, 8, 8), np.uint8))
    (tmp_path / "png.png").rename(img / "png.tif")
    luigi_config("data", "images", str(img))
    tasks = {n: TileImage(image=n) for n in good + list(bad)}
    with _Failures() as f:
        assert not luigi.build(list(tasks.values()), local_scheduler=True, log_level="CRITICAL", workers=1)
    for n in good:
        assert tasks[n].complete(), n
    assert json.loads(Path(tasks["small"].output().path).read_text())["tiles"][0]["width"] == 12
    assert set(f.errors) == {tasks[n].task_id for n in bad}
    for n, problem in bad.items():
        e = f.errors[tasks[n].task_id]
        assert isinstance(e, InputError) and str(e).startswith(f"{img / (n + '.tif')}: ") and problem in str(e), e
        assert "\n" not in str(e)
        assert not tasks[n].tile_dir().exists(), "nothing complete-looking is left behind"
    with pg.cursor() as cur:
        cur.execute("SELECT count(DISTINCT image) FROM tiles")
        assert cur.fetchone()[0] == len(good)


# ---------------------------------------------------------------- a full disk


def _noise_scene(path: Path, size: int = 512) -> Path:
    arr = np.random.default_rng(5).integers(0, 255, (3, size, size), dtype=np.uint8)  # incompressible
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32616), transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)) as dst:
        dst.write(arr)
    return path


def _assert_clear_disk_full_and_nothing_left(task, root: Path):
    # run() itself, to see its exception (the Luigi UI's status and progress callbacks are no-ops)
    task.set_status_message = task.set_progress_percentage = lambda *a: None
    with pytest.raises(OSError) as err:
        task.run()
    assert err.value.errno == errno.ENOSPC
    assert "no space left on device while writing tiles" in str(err.value)
    assert "FOOTPRINTS_WORKDIR" in str(err.value)
    # no tile directory, complete-looking or not, and no temporary left behind
    assert not Path(task.output().path).exists() and not task.tile_dir().exists()
    left = [p for p in root.rglob("*") if p.is_file()]
    assert not left, left
    assert not task.complete()


def test_disk_full_while_writing_tiles_is_clear_and_leaves_nothing(pg, workdir, luigi_config, tmp_path, monkeypatch):
    img = _noise_scene(tmp_path / "data" / "scene.tif")
    luigi_config("tiling", "tile_size", 64)
    luigi_config("tiling", "overlap", 0)
    luigi_config("tiling", "workers", 1)
    written = []

    def full_after_five(path, profile, arr):  # the disk fills up at the sixth tile
        if len(written) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write_tiff(path, profile, arr)
        written.append(path)

    monkeypatch.setattr(tiling_lib, "write_tiff", full_after_five)
    task = TileImage(image="scene", path=str(img))
    _assert_clear_disk_full_and_nothing_left(task, workdir)
    assert len(written) == 5
    monkeypatch.setattr(tiling_lib, "write_tiff", real_write_tiff)
    _run(task)  # with space again, a rerun completes
    assert len(json.loads(Path(task.output().path).read_text())["tiles"]) == 64


def test_a_real_full_filesystem_is_caught(pg, luigi_config, tmp_path, monkeypatch):
    """libtiff only prints ENOSPC and leaves empty tiles: a real 1 MiB tmpfs proves it is caught."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root: run `make test` as root (CI does)")
    img = _noise_scene(tmp_path / "data" / "scene.tif")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        monkeypatch.setenv("FOOTPRINTS_WORKDIR", str(mnt))
        luigi_config("tiling", "tile_size", 64)
        luigi_config("tiling", "overlap", 0)
        luigi_config("tiling", "workers", 2)
        luigi_config("tiling", "compress", "none")
        _assert_clear_disk_full_and_nothing_left(TileImage(image="scene", path=str(img)), mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
