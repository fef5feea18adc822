-- The ground truth of one image with its building ids (Evaluate's SCOT): the labels of the
-- image's label file(s) that touch the image, transformed to the image CRS and clipped to it
-- (as buildings_truth.sql), with their `id` and `Id` properties (jsonb; SpaceNet 7 has `Id`).
SET LOCAL jit = off;
WITH img AS MATERIALIZED (
    SELECT ST_GeomFromWKB(%(extent)s, %(srid)s) AS native, ST_GeomFromWKB(%(extent_4326)s, 4326) AS probe
)
SELECT id_lower, id_upper, ST_AsBinary(g)
FROM (
    SELECT l.id, l.properties -> 'id' AS id_lower, l.properties -> 'Id' AS id_upper,
           ST_CollectionExtract(ST_Intersection(ST_Transform(l.geom, %(srid)s), img.native), 3) AS g
    FROM labels l, img
    WHERE l.source = ANY(%(sources)s) AND ST_Intersects(l.geom_4326, img.probe)
) s
WHERE NOT ST_IsEmpty(g) AND ST_Area(g) > 0
ORDER BY id;
