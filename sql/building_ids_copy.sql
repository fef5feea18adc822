-- bulk load of TrackBuildings' ids (CSV from footprints.trackio.id_rows); footprint as EWKB hex
COPY building_ids (run, tracking, aoi, id, first_date, last_date, n_dates, srid, footprint) FROM STDIN WITH (FORMAT csv)
