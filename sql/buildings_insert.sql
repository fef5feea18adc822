-- DeduplicateBorders, step 4b: one row per building, into the batch's fresh table {child}
-- (buildings_partition.sql).
--   * linked pieces: unioned (their edges on the core lines coincide exactly), collinear
--     vertices dropped, canonical vertex order;
--   * unlinked pieces pass through;
--   * predictions strictly inside their core (the test of dedup_pieces.sql, negated) are whole
--     buildings and come straight from `predictions`.
-- Then, per whole building: the minimum area (m², on the pixel-exact polygon), the
-- topology-preserving simplification (pixels, from a canonical vertex order), and the geo
-- geometries through the image's affine transform. building_id follows the geometry (top to
-- bottom, left to right), so it depends neither on tile order nor on row ids.
-- score: the area-weighted mean of the pieces' scores.
INSERT INTO {child} (batch, run, image, building_id, score, area_m2, srid, geom_pix, geom, geom_4326)
WITH merged AS MATERIALIZED (
    SELECT ST_Union(p.piece) AS g, sum(p.score * ST_Area(p.piece)) / nullif(sum(ST_Area(p.piece)), 0) AS score
    FROM dedup_pieces p JOIN dedup_comp c ON c.piece_id = p.piece_id
    GROUP BY c.comp
), parts AS MATERIALIZED (
    SELECT ST_Normalize(ST_Simplify(d.geom, 0)) AS g, m.score
    FROM merged m, LATERAL ST_Dump(m.g) d
    WHERE ST_Dimension(d.geom) = 2 AND ST_Area(d.geom) * %(pixel_area)s >= %(min_area_m2)s
    UNION ALL
    SELECT p.piece, p.score
    FROM dedup_pieces p
    WHERE NOT EXISTS (SELECT 1 FROM dedup_comp c WHERE c.piece_id = p.piece_id)
      AND ST_Area(p.piece) * %(pixel_area)s >= %(min_area_m2)s
    UNION ALL
    SELECT pr.geom_pix, pr.score
    FROM predictions pr
    JOIN dedup_tiles t ON t.tile_id = pr.tile_id
    CROSS JOIN LATERAL (SELECT Box2D(pr.geom_pix) AS bb) x
    WHERE pr.run = %(run)s AND pr.image = %(image)s
      AND ST_XMin(bb) > t.cx0 AND ST_XMax(bb) < t.cx1 AND ST_YMin(bb) > t.cy0 AND ST_YMax(bb) < t.cy1
      AND ST_Area(pr.geom_pix) * %(pixel_area)s >= %(min_area_m2)s
), simple AS MATERIALIZED (
    SELECT s.g, s.score, ST_Area(s.g) AS area, Box2D(s.g) AS bb
    FROM (SELECT CASE WHEN %(simplify_px)s > 0
                      THEN ST_Normalize(ST_SimplifyPreserveTopology(ST_Normalize(g), %(simplify_px)s))
                      ELSE g END AS g, score
          FROM parts) s
    WHERE NOT ST_IsEmpty(s.g) AND GeometryType(s.g) = 'POLYGON'
), numbered AS (
    SELECT g, score, area,
           row_number() OVER (ORDER BY ST_YMin(bb), ST_XMin(bb), ST_YMax(bb), ST_XMax(bb), area, ST_AsEWKB(g)) AS id
    FROM simple
)
SELECT %(batch)s, %(run)s, %(image)s, id, coalesce(score, 0), area * %(pixel_area)s, %(srid)s, g, geo,
       ST_Transform(geo, 4326)
FROM numbered, LATERAL (SELECT ST_SetSRID(ST_Affine(g, %(a)s, %(b)s, %(d)s, %(e)s, %(c)s, %(f)s), %(srid)s) AS geo) x;
