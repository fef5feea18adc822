-- forget one image's buildings of one run (DeduplicateBorders reruns replace them)
DELETE FROM buildings WHERE run = %(run)s AND image = %(image)s;
