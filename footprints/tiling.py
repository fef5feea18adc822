"""The tile grid of a raster, the tile writer and the tile index.

Grid: windows start at 0 with a step of ``tile_size - overlap``. Edge tiles are SHIFTED
inside the raster (never padded), so every tile pixel is real data; the last row/column
of tiles therefore overlaps its neighbour by at least the configured overlap. A raster
smaller than a tile along an axis gives one tile of the raster's size on that axis.

Cores: each tile owns the part of its window nearest to it; the boundary between two
neighbours lies in the middle of their overlap. Cores partition the raster exactly, so
per-tile results can be stitched (PredictImage) and deduplicated (DeduplicateBorders).
"""
from __future__ import annotations

import errno
import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psycopg2.extras
import rasterio
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.windows import Window

from footprints import geojson
from footprints.db import load_sql, srid_for_crs
from footprints.errors import InputError
from footprints.geo import footprint_4326, window_polygon, window_transform

# ---------------------------------------------------------------- the grid


def axis_starts(n: int, size: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``size`` along an axis of length ``n``."""
    if n <= 0:
        raise ValueError(f"axis length must be positive, got {n}")
    if size <= 0:
        raise ValueError(f"tile size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile size {size}")
    if n <= size:
        return [0]
    step = size - overlap
    starts = list(range(0, n - size, step))
    starts.append(n - size)
    return starts


def axis_cores(starts: list[int], size: int, n: int) -> list[tuple[int, int]]:
    """(offset, length) of each window's core; cores partition [0, n)."""
    length = min(size, n)
    bounds = [0]
    for prev, cur in zip(starts[:-1], starts[1:]):
        bounds.append((cur + prev + length) // 2)  # middle of the overlap [cur, prev + length)
    bounds.append(n)
    return [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class TileSpec:
    tile_id: str
    col_off: int
    row_off: int
    width: int
    height: int
    core_col_off: int
    core_row_off: int
    core_width: int
    core_height: int

    @property
    def window(self) -> Window:
        return Window(self.col_off, self.row_off, self.width, self.height)

    @property
    def core_window(self) -> Window:
        return Window(self.core_col_off, self.core_row_off, self.core_width, self.core_height)


def tile_id_for(col_off: int, row_off: int) -> str:
    return f"c{col_off:06d}_r{row_off:06d}"


def tile_grid(width: int, height: int, tile_size: int, overlap: int) -> list[TileSpec]:
    """All tiles of a width x height raster, row-major."""
    xs, ys = axis_starts(width, tile_size, overlap), axis_starts(height, tile_size, overlap)
    xc, yc = axis_cores(xs, tile_size, width), axis_cores(ys, tile_size, height)
    tw, th = min(tile_size, width), min(tile_size, height)
    return [
        TileSpec(tile_id_for(x, y), x, y, tw, th, cx, cy, cw, ch)
        for y, (cy, ch) in zip(ys, yc)
        for x, (cx, cw) in zip(xs, xc)
    ]


def tile_profile(src_profile: dict, spec: TileSpec, transform: Affine, compress: str) -> dict:
    prof = {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": src_profile["count"],
        "dtype": src_profile["dtype"],
        "crs": src_profile["crs"],
        "transform": window_transform(transform, spec.col_off, spec.row_off),
        "nodata": src_profile.get("nodata"),
    }
    if compress != "none":
        prof["compress"] = compress
        prof["predictor"] = 2 if np.issubdtype(np.dtype(src_profile["dtype"]), np.integer) else 3
        if compress == "zstd":
            prof["zstd_level"] = 1
        elif compress == "deflate":
            prof["zlevel"] = 1
    if spec.width % 16 == 0 and spec.height % 16 == 0:
        prof.update(tiled=True, blockxsize=min(256, spec.width), blockysize=min(256, spec.height))
    if src_profile["count"] > 1:
        prof["interleave"] = "pixel"
    return prof


# ---------------------------------------------------------------- writing tiles


_MAX_READ_BYTES = 16 * 1024 * 1024
# GDAL's block cache defaults to 5% of RAM per process; strip reads barely need it (blocks shared
# by two overlapping strips), and uncapped it grows with the raster (sparse blocks go through it)
_GDAL_CACHE_BYTES = 16 * 1024 * 1024


def _column_chunks(specs: list[TileSpec], bytes_per_col: int) -> list[list[TileSpec]]:
    """Group a row of tiles into runs whose joint read stays under _MAX_READ_BYTES."""
    chunks, cur, c0 = [], [], None
    for s in specs:
        if cur and (s.col_off + s.width - c0) * bytes_per_col > _MAX_READ_BYTES:
            chunks.append(cur)
            cur = []
        if not cur:
            c0 = s.col_off
        cur.append(s)
    if cur:
        chunks.append(cur)
    return chunks


def _has_data(arr: np.ndarray, nodata) -> bool:
    """Whether any pixel of ``arr`` differs from ``nodata`` (None: every pixel is data)."""
    if nodata is None:
        return True
    if np.isnan(nodata):
        return bool((~np.isnan(arr)).any())
    return bool((arr != nodata).any())


def _write_tile_rows(args) -> tuple[int, bool]:
    """Worker: write every tile of the given tile rows. Reads one strip per chunk of tiles.
    Returns (tiles written, whether any pixel is not nodata)."""
    src_path, out_dir, rows, compress = args
    n, has_data = 0, False
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), rasterio.open(src_path) as src:
        prof = src.profile
        nodata = src.nodata
        bytes_per_col = src.count * np.dtype(src.dtypes[0]).itemsize
        for row in rows:
            bytes_per_col_strip = bytes_per_col * row[0].height
            for chunk in _column_chunks(row, bytes_per_col_strip):
                c0 = chunk[0].col_off
                c1 = max(s.col_off + s.width for s in chunk)
                win = Window(c0, chunk[0].row_off, c1 - c0, chunk[0].height)
                try:
                    strip = src.read(window=win)
                except rasterio.errors.RasterioError as e:
                    msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise InputError(src_path, f"corrupt: cannot read pixels {c0}..{c1} x {win.row_off}.."
                                               f"{win.row_off + win.height} ({msg})") from None
                has_data = has_data or _has_data(strip, nodata)
                for s in chunk:
                    arr = strip[:, :, s.col_off - c0 : s.col_off - c0 + s.width]
                    write_tiff(Path(out_dir) / f"{s.tile_id}.tif", tile_profile(prof, s, src.transform, compress), arr)
                    n += 1
    return n, has_data


def write_tiff(path, profile: dict, arr: np.ndarray) -> None:
    """Write ``arr`` as a GeoTIFF file ``path`` (``profile``: rasterio's, with the driver).

    GDAL builds the file in memory and Python writes its bytes, so a full disk raises
    ``OSError(ENOSPC)``: written straight to disk, libtiff only prints the error and leaves an
    empty or truncated tile behind that looks like any other."""
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr)
        data = mem.read()
    with open(path, "wb") as f:
        f.write(data)


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_WHILE = "no space left on device while"


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _DISK_FULL


def disk_full_error(e: OSError, out_dir, what: str) -> OSError:
    """The one-line error of a full disk (or quota) while writing ``what`` into ``out_dir``
    (``e`` itself when it is one already)."""
    if _WHILE in str(e):
        return e
    return OSError(e.errno, f"{Path(out_dir).parent}: {_WHILE} writing {what} "
                            f"({e.strerror or e}); free some space or point FOOTPRINTS_WORKDIR at a larger disk, "
                            f"then rerun (nothing half-written is kept)")


def write_tiles(src_path, out_dir, specs: list[TileSpec], compress: str = "zstd", workers: int = 1, progress=None) -> int:
    """Write ``specs`` as GeoTIFFs (see :func:`_write_tiles`); a full disk is an ``OSError``
    naming the directory and what to do (:func:`disk_full_error`)."""
    try:
        return _write_tiles(src_path, out_dir, specs, compress, workers, progress)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(e, out_dir, "tiles") from None
        raise


def _write_tiles(src_path, out_dir, specs: list[TileSpec], compress: str = "zstd", workers: int = 1, progress=None) -> int:
    """Write ``specs`` as GeoTIFFs ``<tile_id>.tif`` into ``out_dir``; memory stays bounded
    by one strip (tile height x at most 16 MiB of columns) and a 16 MiB GDAL cache per worker.
    A raster whose every pixel is its nodata value, or whose pixels cannot be read, is an
    :class:`InputError` naming it (the caller's temporary directory is then discarded)."""
    rows: dict[int, list[TileSpec]] = {}
    for s in specs:
        rows.setdefault(s.row_off, []).append(s)
    row_list = [rows[k] for k in sorted(rows)]
    # jobs of a few tile rows each, handed out in order
    per_job = max(1, len(row_list) // max(1, workers * 8))
    jobs = [(str(src_path), str(out_dir), row_list[i : i + per_job], compress) for i in range(0, len(row_list), per_job)]
    done, has_data = 0, False
    if workers <= 1 or len(jobs) == 1:
        results = map(_write_tile_rows, jobs)
        for n, data in results:
            done, has_data = done + n, has_data or data
            if progress:
                progress(done, len(specs))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as ex:
            for n, data in ex.map(_write_tile_rows, jobs):
                done, has_data = done + n, has_data or data
                if progress:
                    progress(done, len(specs))
    if specs and not has_data:
        with rasterio.open(src_path) as src:
            nodata = src.nodata
        raise InputError(src_path, f"every pixel is nodata ({nodata:g}): no imagery to find buildings in")
    return done


# ---------------------------------------------------------------- the tile index


def tile_records(specs: list[TileSpec], transform: Affine) -> list[dict]:
    out = []
    for s in specs:
        d = asdict(s)
        d["path"] = f"{s.tile_id}.tif"
        d["transform"] = list(window_transform(transform, s.col_off, s.row_off))[:6]
        out.append(d)
    return out


def read_tile_index(path) -> dict:
    with open(path) as f:
        return json.load(f)


def write_index_geojson(path, records: list[dict], crs) -> None:
    """The tiles' footprints as an RFC 7946 FeatureCollection (EPSG:4326), one feature per tile."""
    feats = []
    for r in records:
        poly = window_polygon(Affine(*r["transform"]), 0, 0, r["width"], r["height"])
        props = {k: r[k] for k in ("tile_id", "path", "col_off", "row_off", "width", "height")}
        feats.append(geojson.feature(footprint_4326(poly, crs), props))
    geojson.write(path, feats)


def record_tiles(conn, image: str, src_path: str, index: dict, crs, tile_dir: Path) -> None:
    """Upsert the image row and replace its tile rows (same transaction as the caller)."""
    srid = srid_for_crs(conn, crs)
    transform = Affine(*index["transform"])
    img_poly = window_polygon(transform, 0, 0, index["width"], index["height"])
    with conn.cursor() as cur:
        cur.execute(load_sql("images_upsert"), {
            "image": image, "path": src_path, "srid": srid, "width": index["width"], "height": index["height"],
            "bands": index["count"], "dtype": index["dtype"], "nodata": index["nodata"],
            "transform": index["transform"], "footprint": footprint_4326(img_poly, crs).wkb,
        })
        cur.execute(load_sql("tiles_delete"), {"image": image, "tiling": index["tiling"]})
        rows = []
        for r in index["tiles"]:
            poly = window_polygon(Affine(*r["transform"]), 0, 0, r["width"], r["height"])
            rows.append({**{k: r[k] for k in ("tile_id", "col_off", "row_off", "width", "height", "core_col_off",
                                                "core_row_off", "core_width", "core_height", "transform")},
                         "image": image, "tiling": index["tiling"], "srid": srid, "path": str(tile_dir / r["path"]),
                         "native": poly.wkb, "footprint": footprint_4326(poly, crs).wkb})
        psycopg2.extras.execute_batch(cur, load_sql("tiles_insert"), rows, page_size=500)
