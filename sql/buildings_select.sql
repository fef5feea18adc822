-- one image's deduplicated buildings (WriteOutputs), in building_id order
SELECT building_id, score, area_m2, srid, ST_AsBinary(geom_pix), ST_AsBinary(geom), ST_AsBinary(geom_4326)
FROM buildings
WHERE run = %(run)s AND image = %(image)s
ORDER BY building_id;
