"""LoadLabels: a GeoJSON label file into the PostGIS ``labels`` table with COPY.

The load itself (CRS rules, parsing, repair, the binary COPY, the partition swap) is
``footprints.labels.load_labels``; this task runs it in one transaction with its marker row,
so a rerun never duplicates rows, and writes the load's report beside the workspace.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import luigi

from footprints import db
from footprints.atomic import write_json
from footprints.labels import load_labels, source_name
from footprints.labels.classes import ClassRule
from tasks.config import class_spec, data, workdir
from tasks.demo import GenerateDemo
from tasks.sources import LabelFile, using_demo
from tasks.targets import PostgresMarker

log = logging.getLogger("luigi-interface")

class LoadLabels(luigi.Task):
    """Loads one GeoJSON label file into PostGIS; rows and marker commit together."""

    path = luigi.Parameter(description="GeoJSON label file")

    def requires(self):
        if using_demo():
            return GenerateDemo()
        return LabelFile(path=self.path)

    def update_id(self) -> str:
        ov = data().label_crs
        field, classes, default = class_spec()
        if classes:  # building types: another class configuration is another load
            ov = f"{ov}|{field}|{','.join(classes)}|{default}"
        key = hashlib.sha1(f"{os.path.abspath(self.path)}|{ov}".encode()).hexdigest()[:12]
        return f"labels:{source_name(self.path)}:{key}"

    def output(self):
        return PostgresMarker(self.update_id(), "labels")

    def report_path(self) -> Path:
        return workdir() / "labels" / f"{source_name(self.path)}.report.json"

    def run(self):
        self.set_status_message(f"loading {self.path}")
        with db.connection() as conn:
            db.ensure_schema(conn)
            with conn.cursor() as cur:  # one loader per source at a time
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"labels:{source_name(self.path)}",))
                cur.execute("DELETE FROM table_updates WHERE update_id LIKE %s",
                            (f"labels:{source_name(self.path)}:%",))
            field, classes, default = class_spec()
            rule = ClassRule(field, classes, default) if classes else None
            report = load_labels(conn, self.path, data().label_crs, progress=self.set_status_message, classes=rule)
            self.output().touch(conn)
        if report.repaired or report.rejected:
            log.warning("%s: %d invalid polygons repaired, %d features rejected (see %s)",
                        self.path, report.repaired, len(report.rejected), self.report_path())
        if report.unknown_classes:
            log.warning("%s: features rejected for a %s not in [data] classes (%s): %s", self.path, report.class_field,
                        ", ".join(class_spec()[1]), ", ".join(f"{v!r} x{n}" for v, n in report.unknown_classes.items()))
        if report.defaulted:
            log.info("%s: %d features without a %s get the default class", self.path, report.defaulted,
                     report.class_field)
        write_json(self.report_path(), report.as_dict(), indent=1)
        self.set_status_message(f"{report.loaded} labels loaded, {report.repaired} repaired, {len(report.rejected)} rejected")
