-- DeduplicateBorders, step 4a: a fresh table for the buildings of one batch (run, image), to be
-- filled without indexes (buildings_insert.sql), indexed in bulk (buildings_index.sql) and
-- attached to `buildings` as the batch's partition (buildings_attach.sql).
-- The same columns, in the same order, and the same named CHECK as `buildings` in schema.sql
-- (ATTACH refuses a table that differs). Spelled out rather than LIKE buildings: LIKE would hold
-- a lock on `buildings` for the whole transaction, and a rerun's DROP of the old partition
-- (ACCESS EXCLUSIVE on `buildings`) could then deadlock with another image's DeduplicateBorders.
-- {bound}: the partition bound as a CHECK, so ATTACH needs no scan to validate it.
CREATE TABLE {child} (
    batch       text NOT NULL,
    run         text NOT NULL,
    image       text NOT NULL,
    building_id integer NOT NULL,
    score       real NOT NULL,
    area_m2     double precision NOT NULL,
    srid        integer NOT NULL,
    geom_pix    geometry(Polygon, 0) NOT NULL,
    geom        geometry(Polygon) NOT NULL,
    geom_4326   geometry(Polygon, 4326) NOT NULL,
    class       text,
    conf        real[],
    CONSTRAINT buildings_geom_srid_check CHECK (ST_SRID(geom) = srid),
    CONSTRAINT {bound} CHECK (batch = %(batch)s)
);
