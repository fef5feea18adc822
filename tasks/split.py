"""SplitDataset: assign the labelled images' tiles to train / val / test.

Two methods ([split] method), both in :mod:`footprints.split`:
- ``image`` (default): whole images go to one split; in an image series run, whole AOIs (every
  date of an AOI in the same split; the lists may name AOIs).
- ``block``: square blocks of each image's CRS are drawn to splits with a seeded hash; a tile
  whose window, grown by ``buffer``, touches blocks of two splits is left out. ``block_size =
  auto`` sizes the blocks from the labelled extent so that every split gets tiles; an explicit
  size that leaves a split empty is an error naming the setting.

The output ``<workdir>/splits/<key>/split.json`` lists, per split, every tile as
``{"image", "tile_id", "tile", "mask", "width", "height", "building_px"}`` (absolute paths).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import luigi

from footprints.atomic import write_json
from footprints.split import SPLITS, parse_list, resolve_block_split, split_by_group, split_by_image, tile_entries
from footprints.tiling import read_tile_index
from tasks.config import split, workdir
from tasks.keys import split_key, split_params
from tasks.masks import MakeMasks
from tasks.sources import labelled_images, series
from tasks.tiling import TileImage

log = logging.getLogger("luigi-interface")


def split_images(images=None) -> dict[str, list[str]]:
    """{"train": [...], "val": [...], "test": [...]} image ids under the current config.

    For ``method = block`` an image may be in several splits (it is listed where any of its
    kept tiles is); this reads the SplitDataset output, which must exist.
    """
    cfg = split()
    if images is None:
        images = labelled_images()
    if cfg.method == "image":
        lists = (parse_list(cfg.train_images), parse_list(cfg.val_images), parse_list(cfg.test_images))
        aoi = {im: a for a, dates in series(images).items() for im in dates.values()}
        if aoi:  # image series: an AOI's dates stay together (lists may name AOIs)
            return split_by_group(images, lambda im: aoi.get(im, im), *lists, cfg.val_fraction, cfg.test_fraction)
        return split_by_image(images, *lists, cfg.val_fraction, cfg.test_fraction)
    path = Path(SplitDataset(images=tuple(sorted(images))).output().path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: run SplitDataset first (block splits depend on the tiles)")
    return json.loads(path.read_text())["images"]


def upstream(image: str) -> dict:
    """The tasks whose outputs SplitDataset reads for one image (tile and mask indexes)."""
    return {"tiles": TileImage(image=image), "masks": MakeMasks(image=image)}


class SplitDataset(luigi.Task):
    """Writes ``<workdir>/splits/<key>/split.json``: the tiles (and masks) of each split."""

    images = luigi.TupleParameter(default=(), description="image ids; empty: every labelled image")

    def image_list(self) -> list[str]:
        return sorted(self.images) if self.images else labelled_images()

    def requires(self):
        return {im: upstream(im) for im in self.image_list()}

    def key(self) -> str:
        return split_key(self.image_list())

    def output(self):
        return luigi.LocalTarget(str(workdir() / "splits" / self.key() / "split.json"))

    def run(self):
        cfg = split()
        images = self.image_list()
        if not images:
            raise ValueError("SplitDataset: no labelled images; set [data] images and [data] labels")
        entries = {}
        for im, req in self.input().items():
            t_path, m_path = Path(req["tiles"].path), Path(req["masks"].path)
            entries[im] = tile_entries(im, read_tile_index(t_path), t_path.parent, read_tile_index(m_path),
                                       m_path.parent)
        if cfg.method == "image":
            by_image = split_images(images)
            splits = {s: [e for im in by_image[s] for e in entries[im]] for s in SPLITS}
            excluded, blocks = [], None
        else:
            res, blocks = resolve_block_split([e for im in images for e in entries[im]], cfg.block_size, cfg.buffer,
                                              cfg.seed, cfg.val_fraction, cfg.test_fraction)
            splits = {s: res[s] for s in SPLITS}
            excluded = res["excluded"]
            by_image = {s: sorted({e["image"] for e in splits[s]}) for s in SPLITS}
        if not splits["train"]:
            raise ValueError(f"SplitDataset: the training split is empty ({cfg.method} split of {len(images)} images"
                             + (f"; {len(excluded)} tiles straddle blocks: raise [split] block_size"
                                if cfg.method == "block" else "") + ")")
        for s in ("val", "test"):
            if not splits[s]:
                log.warning("SplitDataset: the %s split is empty", s)
        counts = {s: len(v) for s, v in splits.items()}
        self.set_status_message(f"tiles: {counts}, excluded {len(excluded)}")
        write_json(self.output().path, {"method": cfg.method, "params": split_params(images), "images": by_image,
                                        "blocks": blocks, "counts": counts, "splits": splits,
                                        "excluded": [{"image": e["image"], "tile_id": e["tile_id"]} for e in excluded]})
