-- TrackBuildings: one date's deduplicated buildings (building_id order), in the AOI's CRS
-- (%(srid)s: its first date's; a no-op transform when the date is in it already); the batch
-- condition (folded to a constant) reads only the (run, image) partition
SELECT building_id, area_m2, ST_AsBinary(ST_Transform(geom, %(srid)s))
FROM buildings
WHERE batch = buildings_batch(%(run)s, %(image)s) AND run = %(run)s AND image = %(image)s
ORDER BY building_id;
