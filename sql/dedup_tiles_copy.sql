COPY dedup_tiles (tile_id, x0, y0, x1, y1, cx0, cy0, cx1, cy1, ci, cj) FROM STDIN WITH (FORMAT csv)
