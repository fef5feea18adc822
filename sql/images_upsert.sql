INSERT INTO images (image, path, srid, width, height, bands, dtype, nodata, transform, footprint)
VALUES (%(image)s, %(path)s, %(srid)s, %(width)s, %(height)s, %(bands)s, %(dtype)s, %(nodata)s,
        %(transform)s, ST_SetSRID(ST_GeomFromWKB(%(footprint)s), 4326))
ON CONFLICT (image) DO UPDATE SET
    path = EXCLUDED.path, srid = EXCLUDED.srid, width = EXCLUDED.width, height = EXCLUDED.height,
    bands = EXCLUDED.bands, dtype = EXCLUDED.dtype, nodata = EXCLUDED.nodata,
    transform = EXCLUDED.transform, footprint = EXCLUDED.footprint;
