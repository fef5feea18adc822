-- DeduplicateBorders, step 4d: the batch table becomes the batch's partition of `buildings`
-- (validation skipped: its CHECK implies the bound; indexes adopted: built by buildings_index.sql).
ALTER TABLE buildings ATTACH PARTITION {child} FOR VALUES IN (%(batch)s);
