-- forget the ids of one AOI under one tracking of a run (a TrackBuildings rerun replaces them)
DELETE FROM building_ids WHERE run = %(run)s AND tracking = %(tracking)s AND aoi = %(aoi)s;
DELETE FROM building_id_dates WHERE run = %(run)s AND tracking = %(tracking)s AND aoi = %(aoi)s;
