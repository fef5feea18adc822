-- DeduplicateBorders, step 4c: the batch table's indexes, built in bulk once it is filled (the
-- GiST builds are sorted builds, PostGIS >= 3.1 with PostgreSQL >= 14), matching the partitioned
-- indexes of `buildings`, so that ATTACH adopts them instead of building its own.
ALTER TABLE {child} ADD CONSTRAINT {pkey} PRIMARY KEY (batch, building_id);
CREATE INDEX {geom_gix} ON {child} USING gist (geom);
CREATE INDEX {geom_pix_gix} ON {child} USING gist (geom_pix);
CREATE INDEX {geom_4326_gix} ON {child} USING gist (geom_4326);
