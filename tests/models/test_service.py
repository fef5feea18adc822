"""`footprints serve` (models/service.py): a real server on a free port, real HTTP requests.

The server runs in a thread of the test process (one model load for the module; a test can
swap the predictor's work for a failing or slow one), except the command-line test, which
starts `footprints serve` as a process."""
import asyncio
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pytest
import rasterio
import shapely
from aiohttp import web
from PIL import Image

import models
from footprints import db
from footprints import service as fs
from footprints.dedup import deduplicate
from footprints.demo import generate_scene, write_geotiff
from footprints.errors import InputError
from footprints.geo import footprint_4326
from footprints.names import image_id
from footprints.outputs import UNMATCHED_COLOR, draw_overlay, geojson_features, read_base_image, read_buildings, write_png
from footprints.polygonize import polygonize_image
from footprints.tiling import tile_grid
from models.inference import predict_file
from models.service import Predictor, Service, Settings, make_app

THRESHOLD = 0.24  # the untrained network's footprint band is ~0.12..0.35: blobs of ~a fifth of the scene
MIN_AREA = 1.0
TILE, OVERLAP = 128, 16
IMAGE = "demo_svc"


# ---------------------------------------------------------------- fixtures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """make_app(service) on 127.0.0.1:<free port>, in a thread with its own event loop."""

    def __init__(self, service):
        self.service, self.port = service, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self):
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(make_app(self.service))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    img, tr, crs, labels = generate_scene(3, size=384)
    write_geotiff(img, tr, crs, d / f"{IMAGE}.tif")
    keras.backend.clear_session()
    net = models.build_unet(3, 3, depth=2, base_filters=4, seed=7, mean=img.reshape(3, -1).mean(1).tolist(),
                            std=img.reshape(3, -1).std(1).tolist())
    (d / "model").mkdir()
    models.save_model_atomic(net, d / "model" / "model.keras")
    return {"dir": d, "image": d / f"{IMAGE}.tif", "model": d / "model" / "model.keras", "labels": labels}


def settings_for(scene, tmp, **kw) -> Settings:
    return Settings(model_file=str(scene["model"]), tile_size=TILE, overlap=OVERLAP, engine="keras",
                    precision="float32", tmp_dir=str(tmp / "tmp"), outputs_dir=str(tmp / "outputs"),
                    max_mb=4, queue=2, **kw)


@pytest.fixture(scope="module")
def server(scene, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    (tmp / "tmp").mkdir()
    (tmp / "outputs").mkdir()
    service = Service(settings_for(scene, tmp))
    with ServerThread(service) as srv:
        srv.tmp = tmp / "tmp"
        srv.outputs = tmp / "outputs"
        yield srv


def call(method, url, body=None, headers=None, timeout=180):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def post_tiff(server, path_or_bytes, query="", headers=None):
    body = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return call("POST", f"{server.url}/predict{query}", body, {"Content-Type": "image/tiff", **(headers or {})})


def assert_alive(server):
    status, _, body = call("GET", f"{server.url}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def raw_http(port, head: bytes, body_chunks=(), timeout=30) -> tuple[int, dict]:
    """Send a request by hand (headers, then body chunks; the server may hang up early) and
    read the status line and the JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        try:
            for c in body_chunks:
                s.sendall(c)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, json.loads(resp.read())


# ---------------------------------------------------------------- the DAG's path, for comparison


def dag_geojson(conn, scene, tmp, run, threshold=THRESHOLD, min_area=MIN_AREA, model=None, classes=()):
    """The library path of PredictImage -> Polygonize -> DeduplicateBorders -> WriteOutputs'
    GeoJSON features, with the DAG's defaults for everything the test does not set (``classes``:
    building types, the model's class channels, as [data] classes)."""
    prob = tmp / f"{run}_prob.tif"
    predict_file(model or scene["model"], scene["image"], prob, TILE, OVERLAP, context="auto", engine="keras",
                 precision="float32", tta=fs.DEFAULTS["tta"])
    with rasterio.open(prob) as src:
        tiles = [asdict(t) for t in tile_grid(src.width, src.height, TILE, OVERLAP)]
        polygonize_image(conn, src, tiles, run, IMAGE, halo_px=fs.DEFAULTS["halo_px"], threshold=threshold,
                         min_area_m2=min_area, three_class=True, bands=list(range(1, src.count + 1)),
                         n_classes=len(classes))
        srid = db.srid_for_crs(conn, src.crs)
        deduplicate(conn, run, IMAGE, tiles, src.transform, srid, min_area_m2=min_area,
                    simplify_px=fs.DEFAULTS["simplify_px"], halo_px=fs.DEFAULTS["halo_px"],
                    min_shared_px=fs.DEFAULTS["min_shared_px"], merge_overlap=fs.DEFAULTS["merge_overlap"],
                    width=src.width, height=src.height, classes=classes)
    conn.commit()
    return geojson_features(image_id(IMAGE), read_buildings(conn, run, IMAGE, classes))


def iou(a, b) -> float:
    return shapely.intersection(a, b).area / shapely.union(a, b).area


# ---------------------------------------------------------------- POST /predict


def test_health_reports_the_model(server):
    status, headers, body = call("GET", f"{server.url}/health")
    h = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert h["status"] == "ok" and h["model"].endswith("model.keras")
    assert h["bands"] == 3 and h["classes"] == ["footprint", "boundary", "contact"]
    assert h["engine"] == "keras" and h["precision"] == "float32" and h["tta"] == fs.DEFAULTS["tta"] == 8
    assert h["thresholds"] == {"threshold": 0.5, "min_area_m2": 5.0} and h["tuning"] == {}


def test_predict_gives_the_buildings_of_the_dags_geojson(server, scene, pg, tmp_path):
    q = f"?threshold={THRESHOLD}&min_area_m2={MIN_AREA}&image={IMAGE}"
    status, headers, body = post_tiff(server, scene["image"], q)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/geo+json")
    fc = json.loads(body)
    assert fc["type"] == "FeatureCollection" and "crs" not in fc
    got = fc["features"]
    ref = dag_geojson(pg, scene, tmp_path, "svc_same")
    assert len(ref) >= 10, "the scene should give a few buildings"
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g["id"] == r["id"] and g["properties"].keys() == r["properties"].keys()
        assert g["properties"]["id"] == r["properties"]["id"]
        assert g["properties"]["ImageId"] == r["properties"]["ImageId"] == IMAGE
        assert g["properties"]["confidence"] == pytest.approx(r["properties"]["confidence"], abs=1e-6)
        assert g["properties"]["area_m2"] == pytest.approx(r["properties"]["area_m2"], rel=1e-9)
        gg, rg = shapely.geometry.shape(g["geometry"]), shapely.geometry.shape(r["geometry"])
        assert iou(gg, rg) > 0.999999
        lon, lat = gg.centroid.coords[0]
        assert -180 <= lon <= 180 and -90 <= lat <= 90
    assert not list(server.tmp.iterdir()), "temporary files left behind"


def test_thresholds_change_the_buildings(server, scene):
    counts = []
    for q in (f"?threshold={THRESHOLD}&min_area_m2=0", f"?threshold={THRESHOLD}&min_area_m2=40", "?threshold=0.9"):
        status, _, body = post_tiff(server, scene["image"], q)
        assert status == 200
        counts.append(len(json.loads(body)["features"]))
    assert counts[0] > counts[1] and counts[2] == 0


TYPES = ("Complete", "Incomplete", "Foundation")


def test_a_typed_model_gives_class_and_conf_as_the_dags_outputs(scene, pg, tmp_path):
    """A model with building types whose class-0 channel is empty and class-1 channel full: the
    service finds the building on the union of the class channels and answers with ``class`` and
    ``conf_*``, the same features as the DAG's GeoJSON."""
    keras.backend.clear_session()
    net = models.build_unet(3, 5, depth=2, base_filters=4, seed=7, channel_names=[*TYPES, "boundary", "contact"])
    head = net.get_layer("logits")
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.array([-20, 20, -20, -20, -20], bias.dtype)])
    (tmp_path / "typed").mkdir()
    model = tmp_path / "typed" / "model.keras"
    models.save_model_atomic(net, model)
    (tmp_path / "tmp").mkdir()
    service = Service(Settings(model_file=str(model), tile_size=TILE, overlap=OVERLAP, engine="keras",
                               precision="float32", tmp_dir=str(tmp_path / "tmp")))
    with ServerThread(service) as srv:
        h = json.loads(call("GET", f"{srv.url}/health")[2])
        assert h["building_types"] == list(TYPES)
        status, _, body = post_tiff(srv, scene["image"], f"?threshold=0.5&min_area_m2=5&image={IMAGE}")
    assert status == 200, body
    got = json.loads(body)["features"]
    assert len(got) == 1  # the whole scene, one building across the tiles
    props = got[0]["properties"]
    assert props["class"] == "Incomplete"
    assert (props["conf_complete"], props["conf_incomplete"], props["conf_foundation"]) == (0.0, 1.0, 0.0)
    ref = dag_geojson(pg, scene, tmp_path, "svc_typed", threshold=0.5, min_area=5.0, model=model, classes=TYPES)
    assert [f["properties"] for f in got] == [f["properties"] for f in ref]
    for g, r in zip(got, ref):
        assert shapely.equals_exact(shapely.geometry.shape(g["geometry"]), shapely.geometry.shape(r["geometry"]),
                                    1e-9)


def _geotiff_bytes(tmp_path, bands=3, crs="EPSG:32616", size=40) -> bytes:
    p = tmp_path / f"x{bands}_{crs is not None}.tif"
    kw = {"crs": crs} if crs else {}
    with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=bands, dtype="uint8",
                       transform=rasterio.transform.from_origin(500000, 4000000, 0.5, 0.5), **kw) as dst:
        dst.write(np.full((bands, size, size), 90, np.uint8))
    return p.read_bytes()


def test_bad_bodies_are_400_with_the_problem_named(server, tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(png, format="PNG")
    cases = [
        (png.getvalue(), "not a GeoTIFF"),
        (b"this is not an image at all", "not a GeoTIFF"),
        (b"", "empty"),
        (_geotiff_bytes(tmp_path, crs=None), "no CRS"),
        (_geotiff_bytes(tmp_path, bands=1), "1 band"),
        (_geotiff_bytes(tmp_path)[:3000], "truncated"),
    ]
    for body, words in cases:
        status, headers, out = post_tiff(server, body)
        assert status == 400, (words, out)
        assert headers["Content-Type"].startswith("application/json")
        err = json.loads(out)
        assert words in err["error"] and err["status"] == 400
        assert_alive(server)
    assert json.loads(post_tiff(server, _geotiff_bytes(tmp_path, bands=4))[2])["error"].endswith(
        "has 4 bands, the model takes 3")
    assert not list(server.tmp.iterdir())


@pytest.mark.parametrize("query,words", [("?threshold=abc", "threshold must be a number"),
                                         ("?threshold=1.5", "threshold must be in [0, 1)"),
                                         ("?min_area_m2=-1", "min_area_m2 must be >= 0")])
def test_bad_parameters_are_400(server, tmp_path, query, words):
    status, _, out = post_tiff(server, _geotiff_bytes(tmp_path), query)
    assert status == 400 and words in json.loads(out)["error"]


def test_too_large_is_413_and_the_server_stays_up(server):
    limit = 4 * 2 ** 20
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/tiff\r\n"
            f"Content-Length: {limit + 1}\r\n\r\n").encode()
    status, err = raw_http(server.port, head)  # refused on its Content-Length, nothing sent
    assert status == 413 and "4 MB" in err["error"]
    # curl's way for large bodies: Expect: 100-continue, answered 413 before the body is sent
    status, err = raw_http(server.port, head.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
    assert status == 413
    # chunked: no length announced, counted as it arrives
    chunk = b"%x\r\n%s\r\n" % (2 ** 20, b"\0" * 2 ** 20)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/tiff\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, err = raw_http(server.port, head, [chunk] * 5 + [b"0\r\n\r\n"])
    assert status == 413
    assert_alive(server)
    assert not list(server.tmp.iterdir())


def test_a_server_error_is_500_and_leaves_no_temporary_file(server, scene, monkeypatch):
    def fail(image_path, workdir, threshold, min_area_m2):
        (Path(workdir) / "probabilities.tif").write_bytes(b"half written")
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(server.service.predictor, "buildings", fail)
    status, _, out = post_tiff(server, scene["image"])
    assert status == 500 and "RuntimeError" in json.loads(out)["error"]
    assert not list(server.tmp.iterdir()), "a failed request left temporary files"
    monkeypatch.undo()
    assert post_tiff(server, scene["image"], "?threshold=0.9")[0] == 200  # and the next one works


def test_predictions_run_one_at_a_time_and_the_queue_is_bounded(server, scene, monkeypatch):
    active, seen = [0], []
    lock = threading.Lock()

    def slow(image_path, workdir, threshold, min_area_m2):
        with lock:
            active[0] += 1
            seen.append(active[0])
        time.sleep(0.4)
        with lock:
            active[0] -= 1
        return []

    monkeypatch.setattr(server.service.predictor, "buildings", slow)
    body = Path(scene["image"]).read_bytes()
    results = []

    def send():
        results.append(post_tiff(server, body)[0])

    threads = [threading.Thread(target=send) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert max(seen) == 1, "two predictions ran at once"
    assert results.count(200) >= 2 and set(results) <= {200, 503}
    assert 503 in results, "more requests than --queue 2 should be refused"
    assert_alive(server)


def test_tuning_json_beside_the_model_sets_the_thresholds(scene, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(scene["model"], d / "model.keras")
    (d / "tuning.json").write_text(json.dumps({"threshold": 0.3, "min_area_m2": 2.5, "f1": 0.8}))
    s = Settings(model_file=str(d / "model.keras"), engine="keras", precision="float32")
    p = Predictor(s)
    assert p.tuning == {"threshold": 0.3, "min_area_m2": 2.5}
    assert p.health()["thresholds"] == {"threshold": 0.3, "min_area_m2": 2.5}
    assert fs.polygon_params({"threshold": "0.4"}, p.tuning, p.defaults()) == {"threshold": 0.4, "min_area_m2": 2.5}
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"threshold": 0.7}))
    assert fs.read_tuning(d / "model.keras", other) == {"threshold": 0.7}
    (d / "tuning.json").write_text(json.dumps({"threshold": "high"}))
    with pytest.raises(InputError, match="tuning.json: threshold must be a number"):
        Predictor(s)


def test_the_services_defaults_are_the_dags():
    from tasks import config

    dag = {"tile_size": config.tiling.tile_size, "overlap": config.tiling.overlap,
           "threshold": config.polygonize.threshold, "min_area_m2": config.polygonize.min_area_m2,
           "simplify_px": config.polygonize.simplify_px, "halo_px": config.polygonize.halo_px,
           "merge_overlap": config.dedup.merge_overlap, "min_shared_px": config.dedup.min_shared_px}
    dag = {k: p._default for k, p in dag.items()} | {"tta": int(config.predict.tta._default)}
    for k in ("threshold", "min_area_m2"):
        if dag[k] == "auto":  # TuneThreshold's value (tuning.json, which the service reads), else untuned
            from footprints.tuning import UNTUNED
            dag[k] = UNTUNED[k]
    assert fs.DEFAULTS == {k: float(v) if k in ("threshold", "min_area_m2") else v for k, v in dag.items()}
    assert Settings(model_file="m").window == config.predict.window._default
    assert Settings(model_file="m").context == config.predict.context._default
    assert Settings(model_file="m").tta == int(config.predict.tta._default) == fs.DEFAULTS["tta"]


# ---------------------------------------------------------------- GET /buildings, the map page


@pytest.fixture
def finished_run(server, scene, pg, tmp_path):
    """A run's buildings in PostGIS (the DAG's path), its `images` row and its overlay PNG."""
    run = "svc_run"
    features = dag_geojson(pg, scene, tmp_path, run)
    with rasterio.open(scene["image"]) as src:
        t = src.transform
        srid = db.srid_for_crs(pg, src.crs)
        footprint = shapely.to_wkb(footprint_4326(shapely.box(*src.bounds), src.crs))
        with pg.cursor() as cur:
            cur.execute(db.load_sql("images_upsert"), {
                "image": IMAGE, "path": str(scene["image"]), "srid": srid, "width": src.width, "height": src.height,
                "bands": src.count, "dtype": src.dtypes[0], "nodata": None, "transform": list(t)[:6],
                "footprint": footprint})
    pg.commit()
    out = server.outputs / run / "images"
    out.mkdir(parents=True, exist_ok=True)
    base, scale = read_base_image(scene["image"])
    write_png(out / f"{IMAGE}_overlay.png",
              draw_overlay(base, [(UNMATCHED_COLOR, [b["geom_pix"] for b in read_buildings(pg, run, IMAGE)])], scale))
    return run, features


def test_buildings_serves_a_finished_run_from_postgis(server, finished_run):
    run, features = finished_run
    everything = "-180,-90,180,90"
    status, headers, body = call("GET", f"{server.url}/buildings?run={run}&bbox={everything}")
    assert status == 200 and headers["Content-Type"].startswith("application/geo+json")
    fc = json.loads(body)
    assert [f["id"] for f in fc["features"]] == [f["id"] for f in features]
    assert fc["features"][0]["properties"] == features[0]["properties"]
    # a box around one building: that building (and only those that reach into the box)
    g = shapely.geometry.shape(features[0]["geometry"])
    x0, y0, x1, y1 = g.bounds
    status, _, body = call("GET", f"{server.url}/buildings?run={run}&image={IMAGE}&bbox={x0},{y0},{x1},{y1}")
    some = json.loads(body)["features"]
    box = shapely.box(x0, y0, x1, y1)
    expected = [f["id"] for f in features if shapely.geometry.shape(f["geometry"]).intersects(box)]
    assert [f["id"] for f in some] == expected and features[0]["id"] in expected and len(expected) < len(features)
    assert json.loads(call("GET", f"{server.url}/buildings?run=nope&bbox={everything}")[2])["features"] == []
    for q, words in (("run=x", "bbox is required"), (f"run={run}&bbox=1,2,3", "four numbers"),
                     (f"run={run}&bbox=10,10,5,5", "minlon < maxlon"), (f"bbox={everything}", "run must be")):
        status, _, body = call("GET", f"{server.url}/buildings?{q}")
        assert status == 400 and words in json.loads(body)["error"], (q, body)
    status, _, body = call("GET", f"{server.url}/runs")
    assert run in json.loads(body)["runs"]
    images = json.loads(call("GET", f"{server.url}/runs/{run}/images")[2])["images"]
    assert images[0]["image"] == IMAGE and images[0]["overlay"] == f"/overlay/{run}/{IMAGE}.png"
    status, headers, png = call("GET", f"{server.url}{images[0]['overlay']}")
    assert status == 200 and headers["Content-Type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert call("GET", f"{server.url}/overlay/{run}/..%2F..%2Fsecret.png")[0] in (400, 404)
    assert call("GET", f"{server.url}/nowhere")[0] == 404


def test_the_map_page_draws_the_buildings_in_headless_chromium(server, finished_run, tmp_path):
    run, features = finished_run
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is missing: scripts/setup.sh installs it"
    status, _, page = call("GET", f"{server.url}/")
    assert status == 200 and b"/static/leaflet/leaflet.js" in page and b"http" not in page.replace(b"http-equiv", b"")
    assert call("GET", f"{server.url}/static/leaflet/leaflet.js")[0] == 200
    shot = tmp_path / "map.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                    f"--screenshot={shot}", "--window-size=800,800", f"{server.url}/?run={run}&image={IMAGE}"],
                   check=True, timeout=120, capture_output=True)
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    outline = (r > 230) & (g < 40) & (b > 230)  # the buildings' #ff00ff outlines
    overlay = (r > 150) & (g > 150) & (b < 90)  # the overlay's yellow buildings beneath them
    assert outline.sum() > 20 * len(features), f"{outline.sum()} magenta pixels for {len(features)} buildings"
    assert overlay.sum() > 500, "the overlay PNG is not drawn"
    # the outlines sit on the overlay's buildings: most magenta pixels have yellow within 3 px
    near = np.zeros_like(overlay)
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            near |= np.roll(np.roll(overlay, dy, 0), dx, 1)
    assert (outline & near).sum() > 0.5 * outline.sum()


# ---------------------------------------------------------------- the command


def test_footprints_serve_command(scene, tmp_path):
    port = free_port()
    exe = Path(sys.executable).with_name("footprints")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([str(exe), "serve", "--model-file", str(scene["model"]), "--port", str(port),
                             "--engine", "keras", "--tmp-dir", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                status, _, body = call("GET", f"{url}/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "slow"
                time.sleep(0.5)
        assert status == 200 and json.loads(body)["bands"] == 3
        status, _, body = call("POST", f"{url}/predict", b"GIF89a", {"Content-Type": "image/tiff"})
        assert status == 400
        assert call("GET", f"{url}/health")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert f"on http://127.0.0.1:{port}" in out  # bound to this machine only, by default
    assert not list(tmp_path.glob("footprints-serve-*"))
    assert subprocess.run([str(exe), "serve", "--model-file", str(tmp_path / "none.keras")],
                          capture_output=True, text=True).returncode == 2


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _repeat_scene(scene, path, n):
    """An n x n GeoTIFF of the demo scene repeated (written strip by strip)."""
    with rasterio.open(scene["image"]) as src:
        base, prof = src.read(), src.profile
    prof.update(width=n, height=n, compress="deflate")
    with rasterio.open(path, "w", **prof) as dst:
        for r in range(0, n, 384):
            h = min(384, n - r)
            dst.write(np.tile(base[:, :h], (1, 1, n // 384 + 1))[:, :, :n], window=rasterio.windows.Window(0, r, n, h))


@pytest.mark.slow
def test_a_5000_px_image_in_bounded_memory(tmp_path):
    """`footprints serve` on a 5000 x 5000 image: the peak memory of the server process exceeds
    its peak on a 1024 x 1024 image by less than 250 MB (measured: ~165 MB, allocator noise
    included), where the whole image at once would need 600 MB more for its float32 input and
    probabilities alone, and gigabytes for the network's activations: the upload streams to
    disk, inference and polygonization read windows, and GDAL's block cache is bounded
    (--gdal-cache-mb)."""
    keras.backend.clear_session()
    net = models.build_unet(3, 3, depth=2, base_filters=2, seed=7, mean=[100.0] * 3, std=[40.0] * 3)
    models.save_model_atomic(net, tmp_path / "small.keras")
    scene = {"image": tmp_path / "scene.tif"}
    img, tr, crs, _ = generate_scene(5, size=384)
    write_geotiff(img, tr, crs, scene["image"])
    for n in (1024, 5000):
        _repeat_scene(scene, tmp_path / f"r{n}.tif", n)
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("footprints")), "serve", "--model-file",
                             str(tmp_path / "small.keras"), "--port", str(port), "--engine", "keras",
                             "--window", "512", "--batch-size", "1", "--tmp-dir", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                call("GET", f"{url}/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.5)
        peaks = {}
        for n in (1024, 5000):
            status, _, body = call("POST", f"{url}/predict?threshold=0.95", (tmp_path / f"r{n}.tif").read_bytes(),
                                   {"Content-Type": "image/tiff"}, timeout=600)
            assert status == 200, body
            peaks[n] = _peak_rss_mb(proc.pid)
        assert peaks[5000] - peaks[1024] < 250, peaks
        assert not list(tmp_path.glob("footprints-serve-*"))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
