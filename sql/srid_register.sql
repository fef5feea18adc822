-- custom CRS without an EPSG code: user-defined SRIDs live in 900000..998999
INSERT INTO spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text)
SELECT s, 'footprints', s, %(srtext)s, %(proj4text)s
FROM (SELECT GREATEST(900000, COALESCE(MAX(srid) + 1, 900000)) AS s
      FROM spatial_ref_sys WHERE srid BETWEEN 900000 AND 998999) n
RETURNING srid;
