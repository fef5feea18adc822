-- Every label of the given sources that touches the image (its outline grown by the mask
-- margin and densified, in EPSG:4326 where the GiST index lives), once, in the label's own CRS.
-- One index scan, no join and no grouping: footprints.masks.query_tile_labels assigns the labels to
-- the image's tiles client-side from the regular tile grid, and moves labels stored in another
-- CRS into the image CRS (vectorised pyproj). Labels already in the image CRS are used exactly
-- as stored: no round trip through degrees. JIT is off for the rest of the caller's
-- transaction: compiling costs more than it saves here.
SET LOCAL jit = off;
SELECT ST_AsBinary(l.geom) AS wkb, l.srid AS label_srid, l.class AS label_class
FROM labels l
WHERE l.source = ANY(%(sources)s)
  AND ST_Intersects(l.geom_4326, ST_GeomFromWKB(%(probe)s, 4326));
