"""Luigi targets of the pipeline."""
from __future__ import annotations

from footprints import db


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
