-- LoadLabels, step 2: the rows, in PostgreSQL's binary COPY format (EWKB geometries, jsonb
-- properties), as footprints.labels.copy.copy_binary_rows writes them, in the order of COPY_COLUMNS.
COPY {child} (source, feature_index, srid, repaired, properties, geom, geom_4326) FROM STDIN (FORMAT binary)
