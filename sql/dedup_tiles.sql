-- DeduplicateBorders, step 0: the tile windows and cores of one image, for this transaction only
-- (filled by COPY from the tile index with dedup_tiles_copy.sql).
-- JIT compiles for seconds on the PostGIS-heavy queries below and gains nothing; the sorts and
-- hashes of a few million rows want more than the default 4 MB. Both for this transaction only.
SET LOCAL jit = off;
SET LOCAL work_mem = '256MB';
DROP TABLE IF EXISTS dedup_tiles;
CREATE TEMP TABLE dedup_tiles (
    tile_id      text PRIMARY KEY,
    col_off      integer NOT NULL,
    row_off      integer NOT NULL,
    width        integer NOT NULL,
    height       integer NOT NULL,
    core_col_off integer NOT NULL,
    core_row_off integer NOT NULL,
    core_width   integer NOT NULL,
    core_height  integer NOT NULL
) ON COMMIT DROP;
