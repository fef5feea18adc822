COPY labels (source, feature_index, srid, repaired, properties, geom, geom_4326) FROM STDIN
