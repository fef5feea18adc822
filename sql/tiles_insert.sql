INSERT INTO tiles (image, tiling, tile_id, col_off, row_off, width, height,
                   core_col_off, core_row_off, core_width, core_height, srid, transform, path,
                   footprint_native, footprint)
VALUES (%(image)s, %(tiling)s, %(tile_id)s, %(col_off)s, %(row_off)s, %(width)s, %(height)s,
        %(core_col_off)s, %(core_row_off)s, %(core_width)s, %(core_height)s, %(srid)s, %(transform)s, %(path)s,
        ST_SetSRID(ST_GeomFromWKB(%(native)s), %(srid)s), ST_SetSRID(ST_GeomFromWKB(%(footprint)s), 4326));
