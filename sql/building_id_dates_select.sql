-- the ids of one image's buildings under one tracking (WriteOutputs, Evaluate): building_id -> id
SELECT building_id, id
FROM building_id_dates
WHERE run = %(run)s AND tracking = %(tracking)s AND image = %(image)s
ORDER BY building_id;
