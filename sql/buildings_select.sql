-- one image's deduplicated buildings (WriteOutputs), in building_id order; the batch condition
-- (folded to a constant) reads only the (run, image) partition
SELECT building_id, score, area_m2, srid, ST_AsBinary(geom_pix), ST_AsBinary(geom), ST_AsBinary(geom_4326),
       class, conf
FROM buildings
WHERE batch = buildings_batch(%(run)s, %(image)s) AND run = %(run)s AND image = %(image)s
ORDER BY building_id;
