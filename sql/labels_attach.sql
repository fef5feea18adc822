-- LoadLabels, step 5 (after the source's previous partition, if any, is dropped): rows of the
-- source inserted into `labels` directly (they land in labels_default) are replaced too, and
-- the source table becomes the source's partition (validation skipped: its CHECK implies the
-- bound; indexes adopted: built by labels_index.sql).
DELETE FROM labels_default WHERE source = %(source)s;
ALTER TABLE labels ATTACH PARTITION {child} FOR VALUES IN (%(source)s);
