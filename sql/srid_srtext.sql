-- The WKT of a PostGIS SRID (footprints.masks.srid_transformer reprojects labels between SRIDs).
SELECT srtext FROM spatial_ref_sys WHERE srid = %(srid)s;
