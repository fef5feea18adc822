-- The image's geometry and its tile windows, for assigning labels to tiles.
SELECT i.transform, i.width, i.height, i.srid, s.srtext,
       array_agg(t.tile_id) AS tile_ids, array_agg(t.col_off) AS col_offs, array_agg(t.row_off) AS row_offs,
       max(t.width) AS tile_width, max(t.height) AS tile_height
FROM images i
JOIN tiles t ON t.image = i.image AND t.tiling = %(tiling)s
JOIN spatial_ref_sys s ON s.srid = i.srid
WHERE i.image = %(image)s
GROUP BY i.image, s.srtext;
