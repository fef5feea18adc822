-- DeduplicateBorders, step 4b: one row per building, into the batch's fresh table {child}
-- (buildings_partition.sql).
--   * linked pieces (a component), in the common case: every link joins two identical whole
--     polygons (dedup_comp.same: each tile saw the entire building, identically) and the
--     pieces' areas add up to that polygon's area. The pieces are then that polygon's parts in
--     the cores (disjoint, each inside it), so their union is the polygon itself: taken as it
--     is, like a prediction inside its core, without GEOS;
--   * other linked pieces: unioned (their edges on the core lines coincide exactly), collinear
--     vertices dropped, canonical vertex order;
--   * unlinked pieces pass through;
--   * predictions strictly inside their core (the test of dedup_pieces.sql, negated) are whole
--     buildings and come straight from `predictions`.
-- Then, per whole building: the minimum area (m², on the pixel-exact polygon), the
-- topology-preserving simplification (pixels, from a canonical vertex order), and the geo
-- geometries through the image's affine transform. building_id follows the geometry (top to
-- bottom, left to right; ties by area, then by the geometry itself), so it depends neither on
-- tile order nor on row ids.
-- score: the area-weighted mean of the pieces' scores.
-- The OFFSET 0 subqueries evaluate each expensive expression once per row; rows stream into
-- the sort for building_id.
INSERT INTO {child} (batch, run, image, building_id, score, area_m2, srid, geom_pix, geom, geom_4326)
WITH comps AS MATERIALIZED (
    SELECT c.comp, bool_and(c.same) AS same, sum(p.area) AS area,
           sum(p.score * p.area) / nullif(sum(p.area), 0) AS score
    FROM dedup_comp c
    JOIN dedup_pieces p ON p.piece_id = c.piece_id
    GROUP BY c.comp
), fast AS (
    SELECT k.comp, k.score, w.whole, w.warea
    FROM comps k
    JOIN dedup_pieces w ON w.piece_id = k.comp           -- comp: the smallest piece_id of the component
    WHERE k.same AND abs(w.warea - k.area) <= 1e-9 * k.area
), unioned AS (
    SELECT ST_Union(p.piece) AS g, k.score
    FROM comps k
    JOIN dedup_comp c ON c.comp = k.comp
    JOIN dedup_pieces p ON p.piece_id = c.piece_id
    WHERE NOT EXISTS (SELECT 1 FROM fast f WHERE f.comp = k.comp)
    GROUP BY k.comp, k.score
), parts AS (
    SELECT whole AS g, score, warea AS area0
    FROM fast
    UNION ALL
    SELECT ST_Normalize(ST_Simplify(d.geom, 0)), u.score, ST_Area(d.geom)
    FROM unioned u, LATERAL ST_Dump(u.g) d
    WHERE ST_Dimension(d.geom) = 2
    UNION ALL
    SELECT p.piece, p.score, p.area
    FROM dedup_pieces p
    WHERE NOT EXISTS (SELECT 1 FROM dedup_comp c WHERE c.piece_id = p.piece_id)
    UNION ALL
    SELECT pr.geom_pix, pr.score, NULL
    FROM predictions pr
    JOIN dedup_tiles t ON t.tile_id = pr.tile_id
    CROSS JOIN LATERAL (SELECT ST_XMin(bb) AS bx0, ST_YMin(bb) AS by0, ST_XMax(bb) AS bx1, ST_YMax(bb) AS by1
                        FROM (SELECT Box2D(pr.geom_pix) AS bb OFFSET 0) s) b
    WHERE pr.run = %(run)s AND pr.image = %(image)s
      AND b.bx0 > t.cx0 AND b.bx1 < t.cx1 AND b.by0 > t.cy0 AND b.by1 < t.cy1
), simple AS (
    SELECT s.g, s.score, x.area, x.bb
    FROM (SELECT CASE WHEN %(simplify_px)s > 0
                      THEN ST_Normalize(ST_SimplifyPreserveTopology(ST_Normalize(g), %(simplify_px)s))
                      ELSE g END AS g, score
          FROM parts
          WHERE %(min_area_m2)s <= 0 OR coalesce(area0, ST_Area(g)) * %(pixel_area)s >= %(min_area_m2)s
          OFFSET 0) s
    CROSS JOIN LATERAL (SELECT ST_Area(s.g) AS area, Box2D(s.g) AS bb OFFSET 0) x
    WHERE NOT ST_IsEmpty(s.g) AND GeometryType(s.g) = 'POLYGON'
), numbered AS (
    SELECT g, score, area,
           row_number() OVER (ORDER BY ST_YMin(bb), ST_XMin(bb), ST_YMax(bb), ST_XMax(bb), area, g) AS id
    FROM simple
)
SELECT %(batch)s, %(run)s, %(image)s, id, coalesce(score, 0), area * %(pixel_area)s, %(srid)s, g, geo,
       ST_Transform(geo, 4326)
FROM numbered, LATERAL (SELECT ST_SetSRID(ST_Affine(g, %(a)s, %(b)s, %(d)s, %(e)s, %(c)s, %(f)s), %(srid)s) AS geo
                        OFFSET 0) x;
