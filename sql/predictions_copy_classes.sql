-- bulk load of Polygonize's rows with building types (CSV from footprints.polygonize.prediction_rows
-- with classes): as predictions_copy.sql, plus conf, an array literal of each class's mean probability
COPY predictions (run, image, tile_id, score, area_m2, srid, geom_pix, geom, conf) FROM STDIN WITH (FORMAT csv)
