-- bulk load of Polygonize's rows (CSV from tasks.polygonize.prediction_rows); geometries as (E)WKB hex
COPY predictions (run, image, tile_id, score, area_m2, srid, geom_pix, geom) FROM STDIN WITH (FORMAT csv)
