COPY dedup_tiles (tile_id, col_off, row_off, width, height, core_col_off, core_row_off, core_width, core_height)
FROM STDIN WITH (FORMAT csv)
