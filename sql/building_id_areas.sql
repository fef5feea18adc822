-- every id of one AOI with its area on each date it is seen (WriteTracks' <aoi>_tracks.csv)
SELECT id, date, area_m2
FROM building_id_dates
WHERE run = %(run)s AND tracking = %(tracking)s AND aoi = %(aoi)s
ORDER BY id, date;
