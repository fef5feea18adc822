-- DeduplicateBorders, step 4b: one row per building, into the batch's fresh table {child}
-- (buildings_partition.sql), from
--   * linked pieces (a component): unioned (their edges on the core lines coincide exactly) --
--     or, where dedup_comp.whole_of names a piece, that piece's whole polygon, which is their
--     union (tasks.dedup.whole_components) -- collinear vertices dropped, canonical vertex order;
--   * unlinked pieces, passed through (dedup_pieces.sql's whole buildings among them);
--   * predictions strictly inside their core (the test of dedup_pieces.sql, negated): whole
--     buildings, straight from `predictions`.
-- Then, per whole building: the minimum area (m², on the pixel-exact polygon), the
-- topology-preserving simplification (pixels, from a canonical vertex order), and the geo
-- geometries through the image's affine transform. building_id follows the geometry (top to
-- bottom, left to right; ties by area, then by the geometry itself), so it depends neither on
-- tile order nor on row ids.
-- score: the area-weighted mean of the pieces' scores; conf (building types; NULL without), the
-- same per class, and class the name (%(classes)s, in order) of the highest (ties: the first).
-- Nothing is materialized: the OFFSET 0 subqueries evaluate each expensive expression once per
-- row, and the rows stream into the sort for building_id. A condition on a parameter that is
-- false (no minimum area, no simplification) is folded away when planned.
INSERT INTO {child} (batch, run, image, building_id, score, area_m2, srid, geom_pix, geom, geom_4326, class, conf)
WITH merged AS (
    SELECT c.comp, min(c.whole_of) AS whole_of, ST_Union(p.piece) FILTER (WHERE c.whole_of IS NULL) AS g,
           sum(p.score * p.area) / nullif(sum(p.area), 0) AS score
    FROM dedup_pieces p
    JOIN dedup_comp c ON c.piece_id = p.piece_id
    GROUP BY c.comp
), merged_conf AS (   -- per component and class: the area-weighted mean (no rows without classes)
    SELECT comp, array_agg(v ORDER BY k)::real[] AS conf
    FROM (SELECT c.comp, u.k, sum(u.v * p.area) / nullif(sum(p.area), 0) AS v
          FROM dedup_pieces p
          JOIN dedup_comp c ON c.piece_id = p.piece_id
          CROSS JOIN LATERAL unnest(p.conf) WITH ORDINALITY u(v, k)
          GROUP BY c.comp, u.k) s
    GROUP BY comp
), parts AS NOT MATERIALIZED (   -- (polygon, score, its area and extent where known, conf)
    SELECT ST_Normalize(ST_Simplify(ST_Normalize(d.geom), 0)) AS g, u.score, ST_Area(d.geom) AS area0,
           NULL::float8 AS bx0, NULL::float8 AS by0, NULL::float8 AS bx1, NULL::float8 AS by1, u.conf
    FROM (SELECT coalesce(w.whole, m.g) AS g, m.score, mc.conf
          FROM merged m
          LEFT JOIN merged_conf mc ON mc.comp = m.comp
          LEFT JOIN (SELECT piece_id, whole FROM dedup_pieces WHERE edge) w ON w.piece_id = m.whole_of) u,
         LATERAL ST_Dump(u.g) d
    WHERE ST_Dimension(d.geom) = 2
    UNION ALL
    SELECT p.piece, p.score, p.area, p.px0, p.py0, p.px1, p.py1, p.conf
    FROM dedup_pieces p
    WHERE NOT EXISTS (SELECT 1 FROM dedup_comp c WHERE c.piece_id = p.piece_id)
    UNION ALL
    SELECT p.whole, p.score, NULL, p.bx0, p.by0, p.bx1, p.by1, p.conf
    FROM (SELECT score, ST_XMin(bb) AS bx0, ST_YMin(bb) AS by0, ST_XMax(bb) AS bx1, ST_YMax(bb) AS by1,
                 tile_id, whole, conf
          FROM (SELECT score, Box3D(geom_pix) AS bb, tile_id, geom_pix AS whole, conf
                FROM predictions WHERE run = %(run)s AND image = %(image)s OFFSET 0) a
          OFFSET 0) p
    JOIN dedup_tiles t ON t.tile_id = p.tile_id
    WHERE p.bx0 > t.cx0 AND p.bx1 < t.cx1 AND p.by0 > t.cy0 AND p.by1 < t.cy1
), simple AS (   -- simplified (then area and extent anew), at least the minimum area before
    SELECT coalesce(by0, ST_YMin(bb)) AS y0, coalesce(bx0, ST_XMin(bb)) AS x0, coalesce(by1, ST_YMax(bb)) AS y1,
           coalesce(bx1, ST_XMax(bb)) AS x1, area, score, g, conf
    FROM (SELECT g, score, area, bx0, by0, bx1, by1, CASE WHEN bx0 IS NULL THEN Box3D(g) END AS bb, conf
          FROM (SELECT g, score, ST_Area(g) AS area, NULL::float8 AS bx0, NULL::float8 AS by0, NULL::float8 AS bx1,
                       NULL::float8 AS by1, conf
                FROM (SELECT ST_Normalize(ST_SimplifyPreserveTopology(ST_Normalize(g), %(simplify_px)s)) AS g, score,
                             conf
                      FROM parts
                      WHERE %(simplify_px)s > 0
                        AND (%(min_area_m2)s <= 0 OR coalesce(area0, ST_Area(g)) * %(pixel_area)s >= %(min_area_m2)s)
                      OFFSET 0) s
                WHERE NOT ST_IsEmpty(g) AND GeometryType(g) = 'POLYGON'
                UNION ALL
                SELECT g, score, coalesce(area0, ST_Area(g)), bx0, by0, bx1, by1, conf
                FROM parts
                WHERE %(simplify_px)s <= 0
                  AND (%(min_area_m2)s <= 0 OR coalesce(area0, ST_Area(g)) * %(pixel_area)s >= %(min_area_m2)s)
                OFFSET 0) s
          OFFSET 0) s
), numbered AS (
    SELECT row_number() OVER (ORDER BY y0, x0, y1, x1, area, g) AS id, area, score, g, conf
    FROM simple
)
SELECT %(batch)s, %(run)s, %(image)s, id, coalesce(score, 0), area * %(pixel_area)s, %(srid)s, g, geo,
       ST_Transform(geo, 4326),
       (SELECT (%(classes)s::text[])[k] FROM unnest(conf) WITH ORDINALITY u(v, k) ORDER BY v DESC NULLS LAST, k LIMIT 1),
       conf
FROM (SELECT id, area, score, g, ST_SetSRID(ST_Affine(g, %(a)s, %(b)s, %(d)s, %(e)s, %(c)s, %(f)s), %(srid)s) AS geo,
             conf
      FROM numbered OFFSET 0) x;
