-- LoadLabels, step 2: the rows, in PostgreSQL's binary COPY format (EWKB geometries, jsonb
-- properties), as footprints.labels.copy.copy_binary_rows writes them, in the order of COPY_COLUMNS
-- ({class_column}: ", class" with building types, else nothing).
COPY {child} (source, feature_index, srid, repaired, properties, geom, geom_4326{class_column}) FROM STDIN (FORMAT binary)
