-- GET /buildings of the prediction service: a finished run's buildings that intersect a lon/lat
-- box (the GiST index on geom_4326), optionally of one image; limit = the cap + 1 (to tell the
-- caller that there were more); class: the building type (NULL without)
SELECT image, building_id, score, area_m2, ST_AsBinary(geom_4326), class
FROM buildings
WHERE run = %(run)s
  AND (%(image)s::text IS NULL OR image = %(image)s::text)
  AND ST_Intersects(geom_4326, ST_MakeEnvelope(%(minlon)s, %(minlat)s, %(maxlon)s, %(maxlat)s, 4326))
ORDER BY image, building_id
LIMIT %(limit)s;
