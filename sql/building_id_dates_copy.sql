-- bulk load of which building of which date carries each id (CSV from footprints.trackio.date_rows)
COPY building_id_dates (run, tracking, aoi, id, date, image, building_id, area_m2) FROM STDIN WITH (FORMAT csv)
