"""Luigi targets of the pipeline."""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil

import luigi
import luigi.task

from footprints import db

log = logging.getLogger("luigi-interface")


class PostgresMarker:
    """A Luigi target: a row in ``table_updates`` that commits with the data it marks.

    Same table layout as ``luigi.contrib.postgres.PostgresTarget`` (update_id,
    target_table, inserted), so luigi's own tooling reads it too; connection settings
    come from the libpq environment instead of task parameters.
    """

    def __init__(self, update_id: str, target_table: str):
        self.update_id = update_id
        self.target_table = target_table

    def exists(self) -> bool:
        conn = db.connect()
        try:
            return db.marker_exists(conn, self.update_id)
        finally:
            conn.close()

    def touch(self, conn) -> None:
        db.touch_marker(conn, self.update_id, self.target_table)

    def __repr__(self):
        return f"PostgresMarker({self.update_id!r})"


@luigi.Task.event_handler(luigi.Event.START)
def remove_stale_luigi_temporaries(task) -> None:
    """A task that starts is the only writer of its outputs (the scheduler runs a task once at a
    time), so Luigi's temporaries of them (``<path>-luigi-tmp-<n>``, from ``LocalTarget.open('w')``
    and ``temporary_path()``) are left-overs of a run killed before its rename: remove them, so a
    rerun leaves exactly what a clean run does."""
    try:
        targets = [t for t in luigi.task.flatten(task.output()) if isinstance(t, luigi.LocalTarget)]
    except Exception as e:  # noqa: BLE001 - a clean-up must never be why a task fails; run() reports real errors
        log.debug("no temporaries cleaned for %s: %s", task, e)
        return
    for target in targets:
        for stale in glob.glob(glob.escape(target.path) + "-luigi-tmp-*"):
            if os.path.isdir(stale) and not os.path.islink(stale):
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
