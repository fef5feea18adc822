DELETE FROM tiles WHERE image = %(image)s AND tiling = %(tiling)s;
