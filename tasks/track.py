"""Image series: TrackBuildings (persistent building ids per AOI) and WriteTracks (``<aoi>_tracks.csv``),
and the SCOT metric of a series run for Evaluate.

A run is a series when its images match ``[data] series_pattern`` (:func:`tasks.sources.series`).
The rules are :mod:`footprints.track` (``[track] method``, ``min_iou``); the PostGIS and file I/O
is :mod:`footprints.trackio`; the metric is :mod:`footprints.scot`.
"""
from __future__ import annotations

import luigi

from footprints import db
from footprints.geo import as_affine, footprint_4326, window_polygon
from footprints.labels import source_name
from footprints.outputs import read_buildings
from footprints.scot import DEFAULT_BETA, DEFAULT_IOU, scot_aois
from footprints.tiling import read_tile_index
from footprints.track import track
from footprints.trackio import (
    footprints_of,
    read_date_buildings,
    read_id_areas,
    read_image_ids,
    read_truth_ids,
    store_tracks,
    write_tracks_csv,
)
from tasks import config
from tasks.dedup import DeduplicateBorders
from tasks.keys import outputs_dir, run_key, track_key
from tasks.progress import report
from tasks.sources import label_path, series
from tasks.targets import PostgresMarker
from tasks.tiling import TileImage

__all__ = ["TrackBuildings", "WriteTracks", "series_scot"]


def aoi_dates(aoi: str) -> dict[str, str]:
    """``{date: image}`` of one AOI of the configured series, in time order."""
    groups = series()
    if aoi not in groups:
        raise KeyError(f"unknown AOI {aoi!r} (images matching [data] series_pattern give AOIs "
                       f"{', '.join(list(groups)[:10]) or 'none'})")
    return groups[aoi]


class TrackBuildings(luigi.Task):
    """The persistent ids of one AOI's buildings through its dates, in PostGIS ``building_ids``
    (one row per id: first and last date, first-seen footprint) and ``building_id_dates`` (the
    id of each building of each date), committed with the marker."""

    aoi = luigi.Parameter(description="AOI of an image series")

    def requires(self):
        return {d: {"buildings": DeduplicateBorders(image=im), "tiles": TileImage(image=im)}
                for d, im in aoi_dates(self.aoi).items()}

    def output(self):
        return PostgresMarker(f"track:{run_key()}:{track_key()}:{self.aoi}", "building_ids")

    def run(self):
        dates = aoi_dates(self.aoi)
        names, images = list(dates), list(dates.values())
        first = read_tile_index(self.input()[names[0]]["tiles"].path)
        cfg, run, tracking = config.track(), run_key(), track_key()
        bids, areas, geoms = [], [], []
        with db.connection() as conn:
            db.ensure_schema(conn)
            srid = db.srid_for_crs(conn, first["crs_wkt"])  # the AOI's CRS: its first date's
            for k, image in enumerate(images):
                b, a, g = read_date_buildings(conn, run, image, srid)
                bids.append(b)
                areas.append(a)
                geoms.append(g)
                report(self, int(50 * (k + 1) / len(images)), f"{image}: {len(b)} buildings")
            tracks = track(geoms, method=cfg.method, min_iou=cfg.min_iou)
            store_tracks(conn, run, tracking, self.aoi, tracks, names, images, bids, areas, srid)
            self.output().touch(conn)
        report(self, 100, f"{len(tracks.first)} ids over {len(names)} dates ({cfg.method})")


class WriteTracks(luigi.Task):
    """``<workdir>/outputs/<run>/<aoi>_tracks.csv``: each id of the AOI with its first and last
    date, the number of dates it is seen on, and its area (m²) on every date."""

    aoi = luigi.Parameter(description="AOI of an image series")

    def requires(self):
        return TrackBuildings(aoi=self.aoi)

    def output(self):
        return luigi.LocalTarget(str(outputs_dir() / f"{self.aoi}_tracks.csv"))

    def run(self):
        with db.connection() as conn:
            areas = read_id_areas(conn, run_key(), track_key(), self.aoi)
        self.output().makedirs()
        with self.output().open("w") as f:
            write_tracks_csv(f, areas, list(aoi_dates(self.aoi)))
        report(self, 100, f"{len(areas)} ids")


def series_scot(images, min_area: float) -> dict | None:
    """The SCOT metric of a series run's tracked buildings against the labels' ``id``/``Id``,
    per AOI and the mean over AOIs (:func:`footprints.scot.scot_aois`), for the AOIs and dates
    of ``images``; None when the run is not a series. Truth and proposals are compared in each
    date's image CRS and filtered by area as the F1 is (truth >= ``min_area``, proposals >)."""
    groups = series(images)
    if not groups:
        return None
    run, tracking = run_key(), track_key()
    truth: dict = {}
    proposals: dict = {}
    with db.connection() as conn:
        for aoi, dates in groups.items():
            for date, image in dates.items():
                lp = label_path(image)
                if lp is None:
                    continue  # no truth on that date: solaris' metric has no such date
                index = read_tile_index(TileImage(image=image).output().path)
                extent = window_polygon(as_affine(index["transform"]), 0, 0, index["width"], index["height"])
                srid = db.srid_for_crs(conn, index["crs_wkt"])
                ids, geoms = read_truth_ids(conn, [source_name(lp)], extent, srid,
                                            footprint_4326(extent, index["crs_wkt"]))
                if any(i is None for i in ids):
                    return {"skipped": f"{lp}: labels without an id or Id property (SCOT needs building ids)"}
                truth.setdefault(aoi, {})[date] = footprints_of(ids, geoms, min_area)
                tracked = read_image_ids(conn, run, tracking, image)
                bs = read_buildings(conn, run, image)
                proposals.setdefault(aoi, {})[date] = footprints_of(
                    [tracked[b["building_id"]] for b in bs], [b["geom"] for b in bs], min_area, strict=True)
    try:
        result = scot_aois(truth, proposals)
    except ValueError as e:  # no truth buildings at all
        return {"skipped": str(e)}
    return {**result, "tracking": tracking, "iou_threshold": DEFAULT_IOU, "beta": DEFAULT_BETA,
            "min_area_m2": min_area}
