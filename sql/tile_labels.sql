-- Every label of the given sources that touches a tile of the image, once, in the image's
-- CRS, with the ids of all the tiles it touches. The tile footprint is grown by %(margin)s
-- (metres/units of the image CRS, so contact pixels see neighbours just outside the tile)
-- and densified before the lookup in EPSG:4326, where the GiST index lives.
-- ST_Transform is a no-op when the label file is already in the image CRS: no round trip.
WITH t AS (
    SELECT tile_id, srid,
           ST_Transform(ST_Segmentize(ST_Buffer(footprint_native, %(margin)s, 'join=mitre'),
                                      ST_Perimeter(footprint_native) / 64.0), 4326) AS probe
    FROM tiles
    WHERE image = %(image)s AND tiling = %(tiling)s
)
SELECT ST_AsBinary(ST_Transform(l.geom, min(t.srid))) AS wkb, array_agg(t.tile_id ORDER BY t.tile_id) AS tile_ids
FROM t
JOIN labels l ON l.geom_4326 && t.probe AND ST_Intersects(l.geom_4326, t.probe)
WHERE l.source = ANY(%(sources)s)
GROUP BY l.id;  -- l.id is the primary key, so l.geom is functionally dependent
