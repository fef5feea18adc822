"""GenerateDemo: the built-in demo dataset of ``[data] demo_scenes / demo_size / demo_seed``.

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
    generate_scene,
    scene_origin,
    scene_seed,
    touching_pairs,
    write_scene,
)
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
        final = demo_dir()
        with atomic_path(final, dir=True) as tmp:
            scenes = []
            for i, name in enumerate(demo_scene_names(n)):
                self.set_status_message(f"generating {name} ({i + 1}/{n}, {size} px)")
                s = scene_seed(seed, i)
                origin = scene_origin(i, size, 0.5)
                image, transform, crs, buildings = generate_scene(s, size=size, resolution=0.5, origin=origin)
                write_scene(image, transform, crs, buildings,
                            tmp / "images" / f"{name}.tif", tmp / "labels" / f"{name}.geojson")
                scenes.append(dict(name=name, image=f"images/{name}.tif", labels=f"labels/{name}.geojson",
                                   seed=s, crs=crs, resolution=0.5, size=size, origin=list(origin),
                                   transform=list(transform)[:6], n_buildings=len(buildings),
                                   n_touching_pairs=len(touching_pairs(buildings))))
                self.set_progress_percentage(int(100 * (i + 1) / (n + 1)))
            manifest = dict(generator_version=GENERATOR_VERSION, key=final.name, demo_scenes=n, demo_size=size,
                            demo_seed=seed, scenes=scenes)
            with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2)
        self.set_progress_percentage(100)
        self.set_status_message(f"{n} demo scenes in {final}")
