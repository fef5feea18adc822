-- DeduplicateBorders, step 0: the tiles' read windows and cores of one image, for this transaction only
-- (filled by COPY from the tile index with dedup_tiles_copy.sql).
-- JIT compiles for seconds on the PostGIS-heavy queries below and gains nothing; the sorts and
-- hashes of a few million rows want more than the default 4 MB. Both for this transaction only.
SET LOCAL jit = off;
SET LOCAL work_mem = '256MB';
DROP TABLE IF EXISTS dedup_tiles;
CREATE TEMP TABLE dedup_tiles (   -- fixed-width columns first: cheaper to read out of a row
    x0 integer NOT NULL,   -- the window Polygonize read: the tile's window grown by the halo,
    y0 integer NOT NULL,   -- within the image (image pixels, x1/y1 exclusive)
    x1 integer NOT NULL,
    y1 integer NOT NULL,
    cx0 integer NOT NULL,  -- the tile's core; cores partition the image in a grid
    cy0 integer NOT NULL,
    cx1 integer NOT NULL,
    cy1 integer NOT NULL,
    ci integer NOT NULL,   -- the core's column and row in the grid of cores
    cj integer NOT NULL,
    tile_id text PRIMARY KEY
) ON COMMIT DROP;
