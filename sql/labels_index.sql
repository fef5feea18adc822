-- LoadLabels, step 3: the source table's indexes, built in bulk once it is filled (the GiST
-- builds are sorted builds, PostGIS >= 3.1 with PostgreSQL >= 14), matching the partitioned
-- indexes of `labels` (the same columns and predicates), so that ATTACH adopts them instead of
-- building its own.
ALTER TABLE {child} ADD CONSTRAINT {pkey} PRIMARY KEY (source, feature_index);
CREATE INDEX {geom_gix} ON {child} USING gist (geom) WHERE srid <> 4326;
CREATE INDEX {geom_4326_gix} ON {child} USING gist (geom_4326);
