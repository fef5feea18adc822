"""The prediction service: ``footprints serve --model-file M.keras [--host 127.0.0.1] [--port 8000]``.

An aiohttp server (``python -m models.service`` runs it too) with

* ``POST /predict`` (body: a GeoTIFF): the image's buildings as an RFC 7946 FeatureCollection in
  lon/lat, with the properties of the pipeline's GeoJSON. The same library code as the DAG: the
  tile grid of :mod:`footprints.tiling`, inference with context (:func:`models.inference.
  predict_file`), Polygonize's per-tile polygons (:func:`footprints.polygonize.iter_tile_polygons`)
  and DeduplicateBorders' border rule, run in memory (:mod:`footprints.borders`): no PostGIS.
  The body streams to a temporary file, the probabilities go to another, and both are read in
  windows, so memory stays bounded whatever the image size; the temporary directory is removed
  whatever happens. Threshold and minimum area: query parameters, else ``tuning.json`` beside
  the model, else the DAG's defaults.
* ``GET /buildings?run=&bbox=minlon,minlat,maxlon,maxlat[&image=]``: a finished run's buildings
  from PostGIS; ``GET /runs``, ``GET /runs/<run>/images``, ``GET /overlay/<run>/<image>.png``.
* ``GET /health``: the model, its bands and classes, the engine.
* ``GET /``: a map page (Leaflet, from ``node_modules``: nothing loads from the internet).

Predictions run one at a time (one model, one worker thread); up to ``--queue`` requests wait,
more get 503. Validation and database reads run on other threads, so a bad request is answered
at once even while a prediction runs. Bad requests are JSON ``{"error": ...}`` with 400, 404,
413 (body over ``--max-mb``) or 503; a server error is a JSON 500 and the server stays up.

Why aiohttp: one mature package (aio-libs, since 2014) that is both the server and its own
``run_app`` (no separate ASGI server to pin), streams request bodies chunk by chunk (a 512 MB
upload goes to disk, never to memory), answers ``Expect: 100-continue`` itself (curl's large
uploads are refused with 413 before they are sent) and serves static files.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psycopg2
import rasterio
from aiohttp import web

from footprints import db
from footprints import service as fs
from footprints.borders import deduplicate_polygons
from footprints.errors import InputError
from footprints.names import image_id
from footprints.outputs import geojson_features
from footprints.polygonize import iter_tile_polygons, probability_bands
from models.inference import load_predictor, predict_file, window_tiles
from models.unet import building_types

log = logging.getLogger("footprints.serve")
REPO = Path(__file__).resolve().parents[1]
WEB = Path(fs.__file__).parent / "web"  # the map page


@dataclass
class Settings:
    """``footprints serve``'s options (see :func:`build_parser`)."""

    model_file: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_mb: float = 512.0
    queue: int = 4
    tile_size: int = fs.DEFAULTS["tile_size"]
    overlap: int = fs.DEFAULTS["overlap"]
    context: str = "auto"
    window: int = 2048
    batch_size: int = 8
    precision: str = "auto"
    engine: str = "auto"
    tta: int = fs.DEFAULTS["tta"]
    threshold: float = fs.DEFAULTS["threshold"]
    min_area_m2: float = fs.DEFAULTS["min_area_m2"]
    simplify_px: float = fs.DEFAULTS["simplify_px"]
    halo_px: int = fs.DEFAULTS["halo_px"]
    merge_overlap: float = fs.DEFAULTS["merge_overlap"]
    min_shared_px: float = fs.DEFAULTS["min_shared_px"]
    tuning: str | None = None
    tmp_dir: str | None = None
    outputs_dir: str | None = None
    node_modules: str = str(REPO / "node_modules")


class Predictor:
    """A loaded model and the service's image -> buildings path (one call at a time)."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.model_file = str(settings.model_file)
        self.tuning = fs.read_tuning(self.model_file, settings.tuning)
        self.predictor = load_predictor(self.model_file, settings.precision, settings.engine, settings.tta)
        self.info = self.predictor[1]
        self.bands = int(self.info["arch"]["input_bands"])
        self.classes = list(self.info["classes"])
        # the head's channels: footprint[, boundary, contact], or with building types one footprint
        # channel per type first (Polygonize's n_classes; the buildings then get class and conf)
        self.three_class = {"boundary", "contact"} <= set(self.classes)
        self.types = building_types(self.classes)

    def health(self) -> dict:
        return {"status": "ok", "model": self.model_file, "bands": self.bands, "classes": self.classes,
                "building_types": list(self.types), "engine": self.info["engine"], "precision": self.info["precision"],
                "tta": self.s.tta,
                "tuning": self.tuning, "thresholds": fs.polygon_params({}, self.tuning, self.defaults()),
                "tiling": {"tile_size": self.s.tile_size, "overlap": self.s.overlap, "context": self.s.context},
                "max_mb": self.s.max_mb}

    def defaults(self) -> dict:
        return {"threshold": self.s.threshold, "min_area_m2": self.s.min_area_m2}

    def buildings(self, image_path, workdir, threshold: float, min_area_m2: float) -> list[dict]:
        """The image's buildings: probabilities (a GeoTIFF in ``workdir``), then Polygonize's
        per-tile polygons, then the border rule; dicts as :func:`footprints.outputs.read_buildings`."""
        s = self.s
        prob = Path(workdir) / "probabilities.tif"
        context = s.context if s.context == "auto" else int(s.context)
        predict_file(self.model_file, image_path, prob, s.tile_size, s.overlap, context=context,
                     batch_size=s.batch_size, compress="none", window=s.window, predictor=self.predictor)
        with rasterio.open(prob) as src:
            tiles = window_tiles(src.width, src.height, s.tile_size, s.overlap)
            bands = probability_bands(self.three_class, len(self.types))  # every head channel
            preds = [(t["tile_id"], float(np.float32(p[2])), p[0])  # score and conf: `real`s in predictions
                     + ((tuple(float(np.float32(v)) for v in p[3]),) if len(p) > 3 else ())
                     for t, polys in iter_tile_polygons(src, tiles, halo_px=s.halo_px, threshold=threshold,
                                                        min_area_m2=min_area_m2, three_class=self.three_class,
                                                        bands=bands, n_classes=len(self.types))
                     for p in polys]
            return deduplicate_polygons(tiles, preds, src.transform, src.width, src.height, src.crs,
                                        min_area_m2=min_area_m2, simplify_px=s.simplify_px, halo_px=s.halo_px,
                                        min_shared_px=s.min_shared_px, merge_overlap=s.merge_overlap,
                                        classes=self.types)


class Service:
    """The aiohttp application's state: the predictor, its worker thread and the waiting line."""

    def __init__(self, settings: Settings, predictor: Predictor | None = None):
        self.s = settings
        self.predictor = predictor or Predictor(settings)
        self.max_bytes = int(settings.max_mb * 2 ** 20)
        self.model_pool = ThreadPoolExecutor(1, thread_name_prefix="predict")  # one request at a time
        self.io_pool = ThreadPoolExecutor(2, thread_name_prefix="io")  # checks and database reads
        self.waiting = 0
        self.lock = threading.Lock()

    def close(self) -> None:
        self.model_pool.shutdown(wait=True)
        self.io_pool.shutdown(wait=True)

    async def run(self, pool, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    # ------------------------------------------------------------ POST /predict

    async def expect(self, request: web.Request):
        """``Expect: 100-continue``: refuse an announced body over the limit before it is sent."""
        if request.content_length is not None and request.content_length > self.max_bytes:
            return _error(413, self._too_large(), close=True)
        if request.version == (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    def _too_large(self) -> str:
        return f"the body is larger than the server's limit of {self.s.max_mb:g} MB (--max-mb)"

    async def _receive(self, request: web.Request, path: Path) -> int:
        if request.content_length is not None and request.content_length > self.max_bytes:
            raise fs.RequestError(413, self._too_large())
        n = 0
        with open(path, "wb") as f:
            async for chunk in request.content.iter_chunked(1 << 20):
                n += len(chunk)
                if n > self.max_bytes:
                    raise fs.RequestError(413, self._too_large())
                f.write(chunk)
        if n == 0:
            raise fs.RequestError(400, "the body is empty: send a GeoTIFF (Content-Type: image/tiff)")
        return n

    async def predict(self, request: web.Request) -> web.Response:
        p = self.predictor
        params = fs.polygon_params(request.query, p.tuning, p.defaults())
        img = request.query.get("image", "image")
        tmp = Path(tempfile.mkdtemp(prefix="footprints-serve-", dir=self.s.tmp_dir))
        try:
            path = tmp / "upload.tif"
            await self._receive(request, path)
            await self.run(self.io_pool, fs.check_geotiff, path, p.bands)
            with self.lock:
                if self.waiting >= self.s.queue:
                    raise fs.RequestError(503, f"busy: {self.waiting} predictions are running or waiting "
                                               f"(--queue {self.s.queue}); retry later")
                self.waiting += 1
            try:
                fut = asyncio.get_running_loop().run_in_executor(self.model_pool, p.buildings, path, tmp,
                                                                 params["threshold"], params["min_area_m2"])
                try:
                    buildings = await asyncio.shield(fut)
                except asyncio.CancelledError:  # the client left: let the worker finish before cleaning up
                    await asyncio.wait([fut])
                    raise
            finally:
                with self.lock:
                    self.waiting -= 1
            body = {"type": "FeatureCollection", "features": geojson_features(image_id(img), buildings)}
            return web.Response(text=json.dumps(body), content_type="application/geo+json")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------ the rest

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(self.predictor.health())

    def _db(self, fn, *args):
        try:
            with db.connection() as conn:
                return fn(conn, *args)
        except psycopg2.Error as e:
            log.warning("database: %s", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            raise fs.RequestError(503, f"the PostGIS database is not available: {type(e).__name__}") from None

    async def buildings(self, request: web.Request) -> web.Response:
        q = request.query
        run = fs.check_name("run", q.get("run"))
        image = fs.check_name("image", q["image"]) if q.get("image") else None
        bbox = fs.parse_bbox(q.get("bbox"))
        fc = await self.run(self.io_pool, self._db, fs.buildings_in_bbox, run, bbox, image)
        return web.Response(text=json.dumps(fc), content_type="application/geo+json")

    async def runs(self, request: web.Request) -> web.Response:
        return web.json_response({"runs": await self.run(self.io_pool, self._db, fs.run_names)})

    async def run_images(self, request: web.Request) -> web.Response:
        run = fs.check_name("run", request.match_info["run"])
        images = await self.run(self.io_pool, self._db, fs.run_images, run, self.s.outputs_dir)
        if not images:
            raise fs.RequestError(404, f"run {run!r} has no buildings in the database")
        return web.json_response({"run": run, "images": images})

    async def overlay(self, request: web.Request) -> web.FileResponse:
        if not self.s.outputs_dir:
            raise fs.RequestError(404, "no outputs directory (--outputs-dir)")
        path = fs.overlay_path(self.s.outputs_dir, request.match_info["run"], request.match_info["image"])
        if not path.is_file():
            raise fs.RequestError(404, f"no overlay for run {request.match_info['run']!r}, image "
                                       f"{request.match_info['image']!r}")
        return web.FileResponse(path, headers={"Content-Type": "image/png"})

    async def index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


def _error(status: int, message: str, close: bool = False) -> web.Response:
    resp = web.json_response({"error": message, "status": status}, status=status)
    if close:
        resp.force_close()  # the rest of an unread body is not drained
    return resp


@web.middleware
async def errors(request: web.Request, handler):
    """Every error as JSON: a RequestError with its status, InputError 400, aiohttp's own (404,
    405, ...) with theirs, anything else 500 (logged); the server stays up."""
    try:
        return await handler(request)
    except fs.RequestError as e:
        return _error(e.status, e.message, close=e.status == 413)
    except InputError as e:
        return _error(400, e.problem)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, e.reason)
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one request is a 500, not a dead server
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error ({type(e).__name__}); the server log has the details")


def make_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[errors])
    r = app.router
    r.add_get("/", service.index)
    r.add_get("/health", service.health)
    r.add_post("/predict", service.predict, expect_handler=service.expect)
    r.add_get("/buildings", service.buildings)
    r.add_get("/runs", service.runs)
    r.add_get("/runs/{run}/images", service.run_images)
    r.add_get("/overlay/{run}/{image}.png", service.overlay)
    r.add_static("/static/app", WEB)
    leaflet = Path(service.s.node_modules) / "leaflet" / "dist"
    if leaflet.is_dir():
        r.add_static("/static/leaflet", leaflet)
    else:
        log.warning("%s is missing (run scripts/setup.sh, which runs npm ci): the map page has no Leaflet", leaflet)
    app.on_cleanup.append(lambda _app: asyncio.get_running_loop().run_in_executor(None, service.close))
    return app


# ---------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    d = Settings(model_file="")
    p = argparse.ArgumentParser(prog="footprints serve", description=(
        "HTTP prediction service: POST /predict (a GeoTIFF -> its buildings as GeoJSON, no database), "
        "GET /buildings?run=&bbox= (a finished run's buildings from PostGIS), GET /health, GET / (a map page)."))
    p.add_argument("--model-file", required=True, metavar="M.keras", help="a trained footprints model")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--max-mb", type=float, default=d.max_mb, help="largest accepted body, MB (larger: 413)")
    p.add_argument("--queue", type=int, default=d.queue, help="predictions running or waiting at once (more: 503)")
    p.add_argument("--tile-size", type=int, default=d.tile_size, help="[tiling] tile_size of the DAG")
    p.add_argument("--overlap", type=int, default=d.overlap, help="[tiling] overlap of the DAG")
    p.add_argument("--context", default=d.context, help="[predict] context: auto, or pixels")
    p.add_argument("--window", type=int, default=d.window, help="[predict] window (memory ~ window²)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="[predict] batch_size")
    p.add_argument("--precision", default=d.precision, help="[predict] precision")
    p.add_argument("--engine", default=d.engine, help="[predict] engine: auto, keras, onnxruntime, openvino")
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=d.tta,
                   help="[predict] tta: probabilities averaged over this many symmetries of each window "
                        "(the tuning beside the model was made with the DAG's setting)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="default probability threshold (tuning.json beside the model and ?threshold= win)")
    p.add_argument("--min-area-m2", type=float, default=d.min_area_m2,
                   help="default minimum building area, m² (tuning.json and ?min_area_m2= win)")
    p.add_argument("--tuning", default=None, metavar="tuning.json",
                   help="threshold and min area from this file (default: tuning.json beside the model, if any)")
    p.add_argument("--simplify-px", type=float, default=d.simplify_px, help="[polygonize] simplify_px")
    p.add_argument("--halo-px", type=int, default=d.halo_px, help="[polygonize] halo_px")
    p.add_argument("--merge-overlap", type=float, default=d.merge_overlap, help="[dedup] merge_overlap")
    p.add_argument("--min-shared-px", type=float, default=d.min_shared_px, help="[dedup] min_shared_px")
    p.add_argument("--tmp-dir", default=None, help="where uploads and probabilities are written (default: $TMPDIR)")
    p.add_argument("--outputs-dir", default=None,
                   help="the runs' outputs (overlay PNGs for the map page); default $FOOTPRINTS_WORKDIR/outputs")
    p.add_argument("--node-modules", default=d.node_modules, help="where npm installed leaflet")
    p.add_argument("--gdal-cache-mb", type=int, default=64,
                   help="GDAL's raster block cache (its default, 5%% of RAM, would grow with the images read)")
    return p


def settings_from_args(args) -> Settings:
    kw = {k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__}
    if kw.get("outputs_dir") is None:
        # $FOOTPRINTS_WORKDIR, as the pipeline uses it (default ./workspace)
        kw["outputs_dir"] = str(Path(os.environ.get("FOOTPRINTS_WORKDIR") or "workspace") / "outputs")
    return Settings(**kw)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # read by GDAL when it first caches a block, i.e. after this; $GDAL_CACHEMAX wins
    os.environ.setdefault("GDAL_CACHEMAX", str(args.gdal_cache_mb))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_from_args(args)
    if not Path(settings.model_file).is_file():
        print(f"footprints serve: error: {settings.model_file}: no such model file", file=sys.stderr)
        return 2
    try:
        service = Service(settings)
    except InputError as e:
        print(f"footprints serve: error: {e}", file=sys.stderr)
        return 2
    log.info("model %s: %s", settings.model_file, json.dumps({k: v for k, v in asdict(settings).items()
                                                              if k != "model_file"}))
    web.run_app(make_app(service), host=settings.host, port=settings.port,
                print=lambda msg: print(f"footprints serve: {msg.strip()}", flush=True))
    return 0


if __name__ == "__main__":  # python -m models.service
    sys.exit(main())
