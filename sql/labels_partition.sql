-- LoadLabels, step 1: a fresh table for the labels of one source (label file), filled without
-- indexes (labels_copy.sql), indexed in bulk (labels_index.sql) and attached to `labels` as the
-- source's partition (labels_attach.sql).
-- The same columns and the same named CHECK as `labels` in schema.sql (ATTACH refuses a table
-- that differs). Spelled out rather than LIKE labels: LIKE would hold a lock on `labels` for the
-- whole transaction, and the final swap (labels_lock.sql) could then deadlock with another
-- source's LoadLabels.
-- {bound}: the partition bound as a CHECK, so ATTACH needs no scan to validate it.
CREATE TABLE {child} (
    id             bigint NOT NULL DEFAULT nextval('labels_id_seq'),
    source         text NOT NULL,
    feature_index  integer NOT NULL,
    srid           integer NOT NULL,
    repaired       boolean NOT NULL DEFAULT false,
    properties     jsonb,
    geom           geometry(MultiPolygon) NOT NULL,
    geom_4326      geometry(MultiPolygon, 4326) NOT NULL,
    class          text,                          -- building type ([data] class_field); NULL: one class
    CONSTRAINT labels_geom_srid_check CHECK (ST_SRID(geom) = srid),
    CONSTRAINT {bound} CHECK (source = %(source)s)
);
