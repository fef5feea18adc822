-- The ground truth of one image for its overlay: the labels of the image's label file(s) that
-- touch the image (GiST lookup in EPSG:4326 with the densified image outline), transformed to
-- the image CRS (a no-op when the labels are in it already) and clipped to the image.
SET LOCAL jit = off;
WITH img AS MATERIALIZED (
    SELECT ST_GeomFromWKB(%(extent)s, %(srid)s) AS native, ST_GeomFromWKB(%(extent_4326)s, 4326) AS probe
)
SELECT ST_AsBinary(g), class
FROM (
    SELECT l.id, ST_CollectionExtract(ST_Intersection(ST_Transform(l.geom, %(srid)s), img.native), 3) AS g, l.class
    FROM labels l, img
    WHERE l.source = ANY(%(sources)s) AND ST_Intersects(l.geom_4326, img.probe)
) s
WHERE NOT ST_IsEmpty(g) AND ST_Area(g) > 0
ORDER BY id;
