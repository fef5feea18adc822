-- footprints schema. Idempotent: run by tasks.db.ensure_schema() under an advisory lock.
-- Geometry columns in the source/image CRS ("geom", "footprint_native") carry their SRID per row
-- (a CHECK ties it to the row's srid column) because one table holds many CRSs; the EPSG:4326
-- copies have a typmod SRID and carry the GiST index used for lookups across CRSs.

CREATE TABLE IF NOT EXISTS table_updates (
    update_id    text PRIMARY KEY,
    target_table text,
    inserted     timestamp NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS images (
    image      text PRIMARY KEY,
    path       text NOT NULL,
    srid       integer NOT NULL,
    width      integer NOT NULL,
    height     integer NOT NULL,
    bands      integer NOT NULL,
    dtype      text NOT NULL,
    nodata     double precision,
    transform  double precision[] NOT NULL,           -- affine a, b, c, d, e, f
    footprint  geometry(Polygon, 4326) NOT NULL
);
CREATE INDEX IF NOT EXISTS images_footprint_gix ON images USING gist (footprint);

CREATE TABLE IF NOT EXISTS tiles (
    image          text NOT NULL,
    tiling         text NOT NULL,                     -- e.g. ts512_ov64
    tile_id        text NOT NULL,
    col_off        integer NOT NULL,
    row_off        integer NOT NULL,
    width          integer NOT NULL,
    height         integer NOT NULL,
    core_col_off   integer NOT NULL,                  -- the tile's core: cores partition the image
    core_row_off   integer NOT NULL,
    core_width     integer NOT NULL,
    core_height    integer NOT NULL,
    srid           integer NOT NULL,
    transform      double precision[] NOT NULL,
    path           text NOT NULL,
    footprint_native geometry(Polygon) NOT NULL CHECK (ST_SRID(footprint_native) = srid),
    footprint      geometry(Polygon, 4326) NOT NULL,  -- densified, for lookups across CRSs
    PRIMARY KEY (image, tiling, tile_id)
);
CREATE INDEX IF NOT EXISTS tiles_footprint_gix ON tiles USING gist (footprint);
CREATE INDEX IF NOT EXISTS tiles_footprint_native_gix ON tiles USING gist (footprint_native);

-- labels: LIST-partitioned by source (the label file's stem), one partition per label file.
-- LoadLabels fills a fresh table without indexes (sql/labels_partition.sql, which must keep the
-- same columns and named CHECK as here: ATTACH checks them), builds its indexes in bulk (sorted
-- GiST builds) and attaches it as the source's partition, dropping the previous one, in the
-- transaction that writes its marker. Rows inserted into `labels` directly land in
-- labels_default. A label is keyed by (source, feature_index); `id` (one sequence) numbers the
-- labels of all sources. Reads name their sources (source = ANY(...)), so only those partitions
-- are read.
-- A database made before the partitioning has a plain `labels` table: dropped when empty;
-- otherwise renamed aside here, and its rows moved into per-source partitions below.
DO $$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('labels') AND relkind = 'r') THEN
        IF NOT EXISTS (SELECT 1 FROM labels) THEN
            DROP TABLE labels;
        ELSIF to_regclass('labels_unpartitioned') IS NOT NULL THEN
            RAISE EXCEPTION 'labels is an unpartitioned table from an older schema, and labels_unpartitioned '
                            'exists already: move one of them away';
        ELSE
            ALTER TABLE labels RENAME TO labels_unpartitioned;
            FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE i.indrelid = to_regclass('labels_unpartitioned') LOOP
                EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, left('unpartitioned_' || r.relname, 63));
            END LOOP;
            IF to_regclass('labels_id_seq') IS NOT NULL THEN
                ALTER SEQUENCE labels_id_seq RENAME TO labels_unpartitioned_id_seq;
            END IF;
        END IF;
    END IF;
END $$;

-- `id` comes from labels_id_seq, which hands each session 1000 numbers at a time (a COPY of
-- 200,000 rows spends a sixth of its time in nextval otherwise): unique, in load order within a
-- load, with gaps.
DO $$
BEGIN
    IF to_regclass('labels') IS NULL THEN
        CREATE SEQUENCE IF NOT EXISTS labels_id_seq CACHE 1000;
        CREATE TABLE labels (
            id             bigint NOT NULL DEFAULT nextval('labels_id_seq'),
            source         text NOT NULL,                 -- label file stem: the partition key
            feature_index  integer NOT NULL,
            srid           integer NOT NULL,              -- the file's own CRS, kept exactly
            repaired       boolean NOT NULL DEFAULT false,
            properties     jsonb,
            geom           geometry(MultiPolygon) NOT NULL,
            geom_4326      geometry(MultiPolygon, 4326) NOT NULL,
            class          text,                          -- building type ([data] class_field); NULL: one class
            CONSTRAINT labels_geom_srid_check CHECK (ST_SRID(geom) = srid),
            PRIMARY KEY (source, feature_index)
        ) PARTITION BY LIST (source);
        ALTER SEQUENCE labels_id_seq OWNED BY labels.id;
    END IF;
END $$;
-- Columns added after databases were made (building types): added where missing (looked up
-- first, so that a schema check takes no lock on the tables where there is nothing to add).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('labels') AND attname = 'class'
                   AND NOT attisdropped) THEN
        ALTER TABLE labels ADD COLUMN class text;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS labels_default PARTITION OF labels DEFAULT;
CREATE INDEX IF NOT EXISTS labels_geom_4326_gix ON labels USING gist (geom_4326);
-- geom's index leaves out the rows in EPSG:4326, where geom = geom_4326 and geom_4326's index
-- serves (a query on geom names its SRID, as geometries of different SRIDs do not compare:
-- `srid = 32616` lets the planner use the partial index). Half the index work of a load.
CREATE INDEX IF NOT EXISTS labels_geom_gix ON labels USING gist (geom) WHERE srid <> 4326;

-- The rows of an older, unpartitioned `labels`: one partition per source, named as
-- footprints.labels.partition_names names it (so the next LoadLabels of the source replaces it); ids
-- kept; a (source, feature_index) that occurs twice keeps its newest row.
DO $$
DECLARE
    s text;
    n bigint;
BEGIN
    IF to_regclass('labels_unpartitioned') IS NOT NULL THEN
        FOR s IN SELECT DISTINCT source FROM labels_unpartitioned LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF labels FOR VALUES IN (%L)',
                           'labels_' || left(encode(sha256(convert_to(s, 'UTF8')), 'hex'), 24) || '_0', s);
        END LOOP;
        INSERT INTO labels (id, source, feature_index, srid, repaired, properties, geom, geom_4326)
        SELECT DISTINCT ON (source, feature_index)
               id, source, feature_index, srid, repaired, properties, ST_Multi(geom), ST_Multi(geom_4326)
        FROM labels_unpartitioned
        ORDER BY source, feature_index, id DESC;
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM setval('labels_id_seq', (SELECT max(id) FROM labels_unpartitioned));
        DROP TABLE labels_unpartitioned;
        RAISE NOTICE 'labels: the % rows of the unpartitioned table moved into per-source partitions', n;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS predictions (
    id         bigserial PRIMARY KEY,
    run        text NOT NULL,                         -- model + tiling + polygonize parameters
    image      text NOT NULL,
    tile_id    text NOT NULL,
    score      real NOT NULL,                         -- mean probability inside the polygon
    area_m2    double precision NOT NULL,
    srid       integer NOT NULL,
    geom_pix   geometry(Polygon, 0) NOT NULL,         -- image pixel coordinates (col, row)
    geom       geometry(Polygon) NOT NULL CHECK (ST_SRID(geom) = srid),
    conf       real[]                                 -- building types: mean probability per class; NULL: one class
);
CREATE INDEX IF NOT EXISTS predictions_run_image_idx ON predictions (run, image);
CREATE INDEX IF NOT EXISTS predictions_geom_pix_gix ON predictions USING gist (geom_pix);
CREATE INDEX IF NOT EXISTS predictions_geom_gix ON predictions USING gist (geom);

-- buildings: LIST-partitioned by batch, one partition per (run, image). DeduplicateBorders
-- fills a fresh, index-free table, builds its indexes in bulk (sorted GiST builds) and attaches
-- it here (sql/buildings_partition.sql, which must keep the same columns and named CHECK: ATTACH
-- checks them); a rerun drops the old partition in the same transaction. Queries name the batch
-- (batch = buildings_batch(run, image)) so that only one partition is read.
-- The batch key: injective (the run's length first), readable, one definition for SQL and Python.
CREATE OR REPLACE FUNCTION buildings_batch(run text, image text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT length(run)::text || ':' || run || '|' || image $$;

-- A database made before the partitioning has a plain `buildings` table: dropped when empty;
-- otherwise renamed aside here (its indexes too, out of the new ones' way), and its rows moved
-- into per-batch partitions below.
DO $$
DECLARE
    r record;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('buildings') AND relkind = 'r') THEN
        IF NOT EXISTS (SELECT 1 FROM buildings) THEN
            DROP TABLE buildings;
        ELSIF to_regclass('buildings_unpartitioned') IS NOT NULL THEN
            RAISE EXCEPTION 'buildings is an unpartitioned table from an older schema, and buildings_unpartitioned '
                            'exists already: move one of them away';
        ELSE
            ALTER TABLE buildings RENAME TO buildings_unpartitioned;
            FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                     WHERE i.indrelid = to_regclass('buildings_unpartitioned') LOOP
                EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, left('unpartitioned_' || r.relname, 63));
            END LOOP;
        END IF;
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS buildings (
    batch       text NOT NULL,                        -- buildings_batch(run, image): the partition key
    run         text NOT NULL,
    image       text NOT NULL,
    building_id integer NOT NULL,
    score       real NOT NULL,
    area_m2     double precision NOT NULL,
    srid        integer NOT NULL,
    geom_pix    geometry(Polygon, 0) NOT NULL,
    geom        geometry(Polygon) NOT NULL,
    geom_4326   geometry(Polygon, 4326) NOT NULL,
    class       text,                                 -- building types: the class of highest conf; NULL: one class
    conf        real[],                               -- building types: mean probability per class ([data] classes order)
    CONSTRAINT buildings_geom_srid_check CHECK (ST_SRID(geom) = srid),
    PRIMARY KEY (batch, building_id)
) PARTITION BY LIST (batch);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('predictions') AND attname = 'conf'
                   AND NOT attisdropped) THEN
        ALTER TABLE predictions ADD COLUMN conf real[];
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('buildings') AND attname = 'conf'
                   AND NOT attisdropped) THEN
        ALTER TABLE buildings ADD COLUMN class text, ADD COLUMN conf real[];
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS buildings_geom_gix ON buildings USING gist (geom);
CREATE INDEX IF NOT EXISTS buildings_geom_pix_gix ON buildings USING gist (geom_pix);
CREATE INDEX IF NOT EXISTS buildings_geom_4326_gix ON buildings USING gist (geom_4326);

-- The rows of an older, unpartitioned `buildings`: one partition per batch, named as
-- tasks.dedup.partition_names names it (so the next DeduplicateBorders of the batch replaces
-- it); their markers stay valid. And an early version of the partitioned table also checked
-- batch = buildings_batch(run, image) on every row: dropped (looked up first, so that this takes
-- no lock on `buildings` where there is nothing to drop).
DO $$
DECLARE
    b text;
    n bigint;
BEGIN
    IF to_regclass('buildings_unpartitioned') IS NOT NULL THEN
        FOR b IN SELECT DISTINCT buildings_batch(run, image) FROM buildings_unpartitioned LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF buildings FOR VALUES IN (%L)',
                           'buildings_' || left(encode(sha256(convert_to(b, 'UTF8')), 'hex'), 24) || '_0', b);
        END LOOP;
        INSERT INTO buildings (batch, run, image, building_id, score, area_m2, srid, geom_pix, geom, geom_4326)
        SELECT buildings_batch(run, image), run, image, building_id, score, area_m2, srid, geom_pix, geom, geom_4326
        FROM buildings_unpartitioned;
        GET DIAGNOSTICS n = ROW_COUNT;
        DROP TABLE buildings_unpartitioned;
        RAISE NOTICE 'buildings: the % rows of the unpartitioned table moved into per-batch partitions', n;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = to_regclass('buildings') AND conname = 'buildings_batch_check') THEN
        ALTER TABLE buildings DROP CONSTRAINT buildings_batch_check;
    END IF;
END $$;

-- Image series (TrackBuildings): the persistent ids of each AOI's buildings under one tracking
-- ([track] method and min_iou, e.g. greedy_iou0.25) of a run's buildings. building_ids has one
-- row per id with its first-seen footprint (what later dates are matched against), in the
-- AOI's CRS (its first date's image CRS); building_id_dates says which building of which date
-- carries the id. TrackBuildings replaces an AOI's rows and writes its marker in one transaction.
CREATE TABLE IF NOT EXISTS building_ids (
    run         text NOT NULL,                        -- buildings.run
    tracking    text NOT NULL,
    aoi         text NOT NULL,
    id          integer NOT NULL,
    first_date  text NOT NULL,
    last_date   text NOT NULL,
    n_dates     integer NOT NULL,                     -- dates on which the id is seen
    srid        integer NOT NULL,
    footprint   geometry(Polygon) NOT NULL,
    CONSTRAINT building_ids_srid_check CHECK (ST_SRID(footprint) = srid),
    PRIMARY KEY (run, tracking, aoi, id)
);
CREATE INDEX IF NOT EXISTS building_ids_footprint_gix ON building_ids USING gist (footprint);

CREATE TABLE IF NOT EXISTS building_id_dates (
    run         text NOT NULL,
    tracking    text NOT NULL,
    aoi         text NOT NULL,
    id          integer NOT NULL,
    date        text NOT NULL,
    image       text NOT NULL,
    building_id integer NOT NULL,                     -- buildings.building_id of (run, image)
    area_m2     double precision NOT NULL,
    PRIMARY KEY (run, tracking, image, building_id)
);
CREATE INDEX IF NOT EXISTS building_id_dates_aoi_idx ON building_id_dates (run, tracking, aoi, id);
