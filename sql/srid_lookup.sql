SELECT srid FROM spatial_ref_sys WHERE auth_name = 'footprints' AND srtext = %(srtext)s LIMIT 1;
