-- How many labels a source has, and their extent in EPSG:4326 (footprints.masks.source_extent).
SELECT count(*), ST_XMin(ST_Extent(geom_4326)), ST_YMin(ST_Extent(geom_4326)),
       ST_XMax(ST_Extent(geom_4326)), ST_YMax(ST_Extent(geom_4326))
  FROM labels
 WHERE source = %(source)s;
