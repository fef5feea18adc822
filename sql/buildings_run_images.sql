-- the prediction service's map page: the images of a run that have buildings, with the lon/lat
-- extent of the image (its `images` row) or, for an image not registered there, of its buildings
SELECT b.image,
       ST_XMin(coalesce(Box2D(i.footprint), b.extent)), ST_YMin(coalesce(Box2D(i.footprint), b.extent)),
       ST_XMax(coalesce(Box2D(i.footprint), b.extent)), ST_YMax(coalesce(Box2D(i.footprint), b.extent)),
       b.n
FROM (SELECT image, ST_Extent(geom_4326) AS extent, count(*) AS n
      FROM buildings WHERE run = %(run)s GROUP BY image) b
LEFT JOIN images i ON i.image = b.image
ORDER BY b.image;
