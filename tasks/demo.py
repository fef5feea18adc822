"""GenerateDemo: the built-in demo dataset of ``[data] demo_scenes / demo_size / demo_seed``
(and ``demo_dates``: with more than one, every scene on that many monthly dates, an image series).

The scenes (seeded synthetic aerial images with exact building labels) come from
:mod:`footprints.demo`; this task names them, writes them under ``<workdir>/demo/<key>/`` and
lists them in ``manifest.json``.
"""
from __future__ import annotations

import json

import luigi

from footprints.atomic import atomic_path
from footprints.demo import (
    GENERATOR_VERSION,
    demo_scene_names,
    demo_series_names,
    generate_scene,
    generate_series,
    generate_typed_scene,
    scene_origin,
    scene_seed,
    touching_pairs,
    write_geojson,
    write_geotiff,
    write_scene,
)
from footprints.demo.series import describe, series_to_geojson
from footprints.demo.spectral import WORLDVIEW_BANDS, to_worldview
from tasks.config import data
from tasks.keys import demo_dir


class GenerateDemo(luigi.Task):
    """The demo dataset of ``[data] demo_scenes / demo_size / demo_seed``.

    Writes ``images/<name>.tif``, ``labels/<name>.geojson`` and, last, ``manifest.json`` into a
    temporary sibling directory that is renamed into place, so a killed run leaves nothing
    half-written (stale temporary directories are removed on the next run).
    """

    def output(self):
        return luigi.LocalTarget(str(demo_dir() / "manifest.json"))

    def run(self):
        cfg = data()
        n, size, seed = int(cfg.demo_scenes), int(cfg.demo_size), int(cfg.demo_seed)
        if n < 1:
            raise ValueError(f"[data] demo_scenes must be >= 1, got {n}")
        if size < 64:
            raise ValueError(f"[data] demo_size must be >= 64 px, got {size}")
        dates = int(cfg.demo_dates)
        if dates < 1:
            raise ValueError(f"[data] demo_dates must be >= 1, got {dates}")
        typed = bool(cfg.demo_typed)
        if typed and dates > 1:
            raise ValueError("[data] demo_typed and demo_dates > 1 do not go together (yet): choose one")
        bands = int(cfg.demo_bands)
        final = demo_dir()
        with atomic_path(final, dir=True) as tmp:
            if dates > 1:
                self._write_series(tmp, final.name, n, size, seed, dates, bands)
                return  # the directory is complete: atomic_path renames it into place
            scenes = []
            for i, name in enumerate(demo_scene_names(n)):
                self.set_status_message(f"generating {name} ({i + 1}/{n}, {size} px)")
                s = scene_seed(seed, i)
                origin = scene_origin(i, size, 0.5)
                conds, extra = None, {}
                if typed:  # the same layout, buildings with a condition drawn as such
                    image, transform, crs, buildings, conds = generate_typed_scene(s, size=size, resolution=0.5,
                                                                                   origin=origin)
                    extra = {"conditions": {str(c): conds.count(c) for c in sorted(set(conds), key=str)}}
                else:
                    image, transform, crs, buildings = generate_scene(s, size=size, resolution=0.5, origin=origin)
                if bands == 8:  # WorldView-2-like uint16 from the rendered RGB
                    image = to_worldview(image, s)
                write_scene(image, transform, crs, buildings,
                            tmp / "images" / f"{name}.tif", tmp / "labels" / f"{name}.geojson", conds)
                scenes.append(dict(name=name, image=f"images/{name}.tif", labels=f"labels/{name}.geojson",
                                   seed=s, crs=crs, resolution=0.5, size=size, origin=list(origin),
                                   transform=list(transform)[:6], n_buildings=len(buildings),
                                   n_touching_pairs=len(touching_pairs(buildings)), **extra))
                self.set_progress_percentage(int(100 * (i + 1) / (n + 1)))
            manifest = dict(generator_version=GENERATOR_VERSION, key=final.name, demo_scenes=n, demo_size=size,
                            demo_seed=seed, **({"demo_typed": True} if typed else {}),
                            **({"demo_bands": bands, "band_names": list(WORLDVIEW_BANDS)} if bands == 8 else {}),
                            scenes=scenes)
            with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
        self.set_progress_percentage(100)
        self.set_status_message(f"{n} demo scenes in {final}")

    def _write_series(self, tmp, key: str, n: int, size: int, seed: int, dates: int, bands: int = 3) -> None:
        """Every scene on ``dates`` dates: ``images/<id>.tif``, ``labels/<id>.geojson`` (labels with
        a stable ``Id``), image ids as SpaceNet 7's, then ``manifest.json``."""
        names = demo_series_names(n, dates)
        scenes = []
        for i, aoi in enumerate(demo_scene_names(n)):
            self.set_status_message(f"generating {aoi} on {dates} dates ({i + 1}/{n}, {size} px)")
            s, origin = scene_seed(seed, i), scene_origin(i, size, 0.5)
            series = generate_series(s, dates, size=size, resolution=0.5, origin=origin)
            counts = describe([d["plan"] for d in series])["dates"]
            for (_, date, name), d, c in zip([x for x in names if x[0] == aoi], series, counts):
                image = to_worldview(d["image"], s + len(scenes)) if bands == 8 else d["image"]
                write_geotiff(image, d["transform"], d["crs"], tmp / "images" / f"{name}.tif")
                write_geojson(series_to_geojson(d["ids"], d["buildings"], d["crs"]), tmp / "labels" / f"{name}.geojson")
                scenes.append(dict(name=name, aoi=aoi, date=date, image=f"images/{name}.tif",
                                   labels=f"labels/{name}.geojson", seed=s, crs=d["crs"], resolution=0.5, size=size,
                                   origin=list(origin), transform=list(d["transform"])[:6], n_buildings=len(d["ids"]),
                                   **c))
            self.set_progress_percentage(int(100 * (i + 1) / (n + 1)))
        manifest = dict(generator_version=GENERATOR_VERSION, key=key, demo_scenes=n, demo_size=size,
                        demo_seed=seed, demo_dates=dates, **({"demo_bands": bands} if bands == 8 else {}),
                        scenes=scenes)
        with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
