-- Every label of the given sources that touches a tile of the image, once, in its own CRS
-- (with that CRS's SRID and the image's), with the ids of all the tiles it touches (in no
-- particular order). tasks.masks.query_tile_labels moves labels stored in another CRS into the
-- image CRS client-side (vectorised pyproj), which keeps this query as lean as a bare join. The tile footprint
-- is grown by %(margin)s (metres/units of the image CRS, so contact pixels see neighbours
-- just outside the tile) and densified before the lookup in EPSG:4326, where the GiST index lives.
-- Labels already in the image CRS are used exactly as stored: no round trip through degrees.
-- Speed (bench/labels.py): the probes are MATERIALIZED so each is computed once per tile (an
-- inlined CTE recomputes it for every label it is tested against); the GROUP BY runs over narrow
-- (label key, tile id) rows (the key of `labels`: source, feature_index) and each label's
-- geometry is fetched once afterwards; JIT is off for the rest of the caller's
-- transaction, as compiling this query costs more than it saves.
SET LOCAL jit = off;
WITH t AS MATERIALIZED (
    SELECT tile_id, srid,
           ST_Transform(ST_Segmentize(ST_Buffer(footprint_native, %(margin)s, 'join=mitre'),
                                      ST_Perimeter(footprint_native) / 64.0), 4326) AS probe
    FROM tiles
    WHERE image = %(image)s AND tiling = %(tiling)s
), hits AS (
    SELECT l.source, l.feature_index, min(t.srid) AS srid, array_agg(t.tile_id) AS tile_ids
    FROM t
    JOIN labels l ON ST_Intersects(l.geom_4326, t.probe)
    WHERE l.source = ANY(%(sources)s)
    GROUP BY l.source, l.feature_index
)
SELECT ST_AsBinary(l.geom) AS wkb, l.srid AS label_srid, h.srid AS image_srid, h.tile_ids
FROM hits h
JOIN labels l ON l.source = h.source AND l.feature_index = h.feature_index
WHERE l.source = ANY(%(sources)s);
