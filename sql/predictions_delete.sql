-- forget one image's polygons of one run (Polygonize reruns replace them)
DELETE FROM predictions WHERE run = %(run)s AND image = %(image)s;
