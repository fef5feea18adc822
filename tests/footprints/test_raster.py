"""footprints/raster.py: opening rasters, with errors that name the file."""
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from footprints.errors import InputError
from footprints.raster import open_raster, raster_meta


def _write(path, arr, crs="EPSG:32616", nodata=None, transform=Affine(0.5, 0, 500000, 0, -0.5, 4000000)):
    prof = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
            "dtype": arr.dtype.name, "transform": transform, "nodata": nodata}
    if crs:
        prof["crs"] = CRS.from_user_input(crs)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)


def test_zero_byte_and_corrupt_tiff(tmp_path):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.tif: file is empty"):
        open_raster(empty)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x13" * 200)
    with pytest.raises(InputError, match=r"corrupt\.tif: not a readable raster"):
        open_raster(corrupt)
    with pytest.raises(InputError, match=r"missing\.tif: file does not exist"):
        open_raster(tmp_path / "missing.tif")


def test_raster_without_crs(tmp_path):
    p = tmp_path / "nocrs.tif"
    _write(p, np.ones((1, 8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match=r"nocrs\.tif: raster has no CRS"):
        open_raster(p)


def test_raster_meta(tmp_path):
    p = tmp_path / "ok.tif"
    _write(p, np.ones((2, 8, 10), np.uint16), nodata=0)
    with open_raster(p) as src:
        meta = raster_meta(src)
    assert meta["width"] == 10 and meta["height"] == 8 and meta["count"] == 2 and meta["dtype"] == "uint16"
    assert meta["nodata"] == 0 and meta["transform"] == [0.5, 0, 500000, 0, -0.5, 4000000]
    assert CRS.from_wkt(meta["crs_wkt"]).to_epsg() == 32616


# ---------------------------------------------------------------- bad inputs (issue 11), one line each


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_truncated_tiff_is_an_error_naming_it(tmp_path):
    good = tmp_path / "good.tif"
    _write(good, np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    data = good.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as e:
        open_raster(cut)
    assert _one_line(e).startswith(f"{cut}: truncated or corrupt")


def test_png_renamed_tif_is_an_error_naming_the_format(tmp_path):
    png = tmp_path / "photo.png"
    with rasterio.open(png, "w", driver="PNG", width=8, height=8, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 8, 8), np.uint8))
    renamed = tmp_path / "photo.tif"
    png.rename(renamed)
    with pytest.raises(InputError) as e:
        open_raster(renamed)
    assert _one_line(e).startswith(f"{renamed}: is a PNG file, not a GeoTIFF")


def test_raster_without_geotransform(tmp_path):
    p = tmp_path / "pixels.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        _write(p, np.ones((1, 8, 8), np.uint8), transform=Affine.identity())
    with pytest.raises(InputError) as e:
        open_raster(p)
    assert _one_line(e).startswith(f"{p}: raster has no geotransform")


@pytest.mark.parametrize("dtype,bands", [("float32", 3), ("int16", 3), ("uint16", 1), ("uint8", 4)])
def test_any_numeric_dtype_and_band_count_is_accepted(tmp_path, dtype, bands):
    """float32/int16 imagery, 1-band (panchromatic) and 4-band RGBA are valid: tiles keep the
    source dtype and bands, and training normalises each band by its own statistics
    (models.data), so nothing is rescaled here. An alpha band is kept as a 4th input band."""
    p = tmp_path / f"{dtype}_{bands}.tif"
    arr = (np.random.default_rng(1).random((bands, 8, 8)) * 1000 - 200).astype(dtype)
    _write(p, arr)
    with open_raster(p) as src:
        meta = raster_meta(src)
    assert (meta["dtype"], meta["count"]) == (dtype, bands)


# ---------------------------------------------------------------- pixel reads


def _tiled(path, arr, block=16, interleave="pixel"):
    prof = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
            "dtype": arr.dtype.name, "transform": Affine(0.5, 0, 500000, 0, -0.5, 4000000), "crs": "EPSG:32616",
            "tiled": True, "blockxsize": block, "blockysize": block, "compress": "zstd", "interleave": interleave}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(arr)


def test_read_array_is_pixel_interleaved_and_crops_like_rasterio(tmp_path, recwarn):
    from rasterio.windows import Window

    from footprints.raster import read_array

    arr = np.random.default_rng(0).integers(0, 65535, (3, 40, 56)).astype(np.uint16)
    _tiled(tmp_path / "a.tif", arr)
    got = read_array(tmp_path / "a.tif")
    assert got.flags.c_contiguous and got.dtype == np.uint16
    np.testing.assert_array_equal(got, np.moveaxis(arr, 0, -1))
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif", Window(5, 7, 20, 9)), np.moveaxis(arr[:, 7:16, 5:25], 0, -1))
    # a window past the edge is cropped, as rasterio reads it
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif", Window(50, 30, 20, 20)), np.moveaxis(arr[:, 30:, 50:], 0, -1))
    assert not [w for w in recwarn if issubclass(w.category, rasterio.errors.NotGeoreferencedWarning)]
    with pytest.raises(InputError, match=r"missing\.tif: cannot read raster"):
        read_array(tmp_path / "missing.tif")


@pytest.mark.parametrize("block,interleave", [(16, "pixel"), (32, "band")])
def test_shared_chunk_reader_equals_window_reads_and_drops_every_chunk(tmp_path, block, interleave):
    from concurrent.futures import ThreadPoolExecutor

    from footprints.raster import SharedChunkReader, WindowReader

    arr = np.random.default_rng(1).integers(0, 255, (3, 300, 1100)).astype(np.uint8)
    _tiled(tmp_path / "s.tif", arr, block, interleave)
    # overlapping windows (a context-window plan), each read once, from 4 threads
    wins = [{"col_off": c, "row_off": r, "width": min(400, 1100 - c), "height": min(144, 300 - r)}
            for r in range(0, 300, 96) for c in range(0, 1100, 320)]
    with SharedChunkReader(tmp_path / "s.tif", wins) as shared, WindowReader(tmp_path / "s.tif") as plain:
        reads = {}
        decoded = []
        orig = shared._read_chunk
        shared._read_chunk = lambda k: decoded.append(k) or orig(k)
        with ThreadPoolExecutor(4) as ex:
            for i, a in enumerate(ex.map(shared, wins)):
                reads[i] = a
        for i, w in enumerate(wins):
            np.testing.assert_array_equal(reads[i], plain(w))
        assert len(decoded) == len(set(decoded)) == len(shared._uses)  # every chunk decoded once
        assert not shared._chunks  # and dropped after its last window
        np.testing.assert_array_equal(shared(wins[0]), plain(wins[0]))  # read again: directly
