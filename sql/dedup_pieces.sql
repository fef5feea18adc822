-- DeduplicateBorders, step 1: the predictions of (run, image) that reach their tile core's
-- outline, as pieces.
-- Decided on the exact extent (Box3D, computed once per row in a fenced subquery: OFFSET 0
-- keeps the planner from copying the call into every comparison), without GEOS:
--   * strictly inside the core (not even touching its outline): a whole building, which
--     buildings_insert.sql takes straight from `predictions` (the same test, negated here);
--   * outside the core: another tile's business, dropped;
--   * (conf: the class confidences of building types, NULL without; carried like the score)
--   * the rest reach the core's outline. Most of them are buildings that every tile whose core
--     they reach saw entirely and identically: the same polygon (exact equality, hashed) from
--     each of those tiles, once each (count = cells of the cores' grid rectangle they span, and
--     distinct cells), and not touching the outline of that rectangle except on the image
--     border. Such a polygon is the building, taken once, as one piece that reaches no core
--     outline (edge false: nothing to link; buildings_insert.sql passes it through). Its score:
--     that of the tile whose core holds the centre of its extent. (Predictions of one tile never
--     overlap, so nothing else could be linked to its parts: the clip-and-link path below would
--     give the same polygon.)
--   * the others are clipped to their core with ST_ClipByBox2D (GEOS' rectangle intersection:
--     the same pieces as ST_Intersection on these rectilinear polygons, ten times faster).
--     Cores partition the image, so the pieces of different tiles never overlap (the
--     duplicates that overlapping windows produce are gone), and every building is the union
--     of its pieces. Pixel-exact polygons clipped by integer rectangles stay exact, and their
--     edges on a core line coincide with their neighbours'.
-- Per piece: the prediction, its extent (px0..py1), its core (cx0..cy1), the tile's whole
-- polygon and the window the tile read (x0..y1), which step 2 compares; edge: the piece reaches
-- the core's outline, so the building may go on in a neighbouring core; complete: the whole
-- polygon does not reach the edge of the window the tile read (except on the image border), so
-- that tile saw the entire building; the areas of the piece and of the whole polygon.
DROP TABLE IF EXISTS dedup_pieces;
CREATE TEMP TABLE dedup_pieces ON COMMIT DROP AS
WITH q AS MATERIALIZED (
    SELECT p.pred_id, p.score, p.bx0, p.by0, p.bx1, p.by1,
           t.cx0, t.cy0, t.cx1, t.cy1, t.x0, t.y0, t.x1, t.y1, t.ci, t.cj,
           (p.bx0 >= t.cx0 AND p.bx1 <= t.cx1 AND p.by0 >= t.cy0 AND p.by1 <= t.cy1) AS inside, p.whole, p.conf
    FROM (SELECT pred_id, score, ST_XMin(bb) AS bx0, ST_YMin(bb) AS by0, ST_XMax(bb) AS bx1, ST_YMax(bb) AS by1,
                 tile_id, whole, conf
          FROM (SELECT id AS pred_id, score, Box3D(geom_pix) AS bb, tile_id, geom_pix AS whole, conf
                FROM predictions WHERE run = %(run)s AND image = %(image)s OFFSET 0) a
          OFFSET 0) p
    JOIN dedup_tiles t ON t.tile_id = p.tile_id
    WHERE p.bx0 < t.cx1 AND p.bx1 > t.cx0 AND p.by0 < t.cy1 AND p.by1 > t.cy0
      AND NOT (p.bx0 > t.cx0 AND p.bx1 < t.cx1 AND p.by0 > t.cy0 AND p.by1 < t.cy1)
), whole AS (
    SELECT min(score) FILTER (WHERE cx0 <= (bx0 + bx1) / 2 AND (bx0 + bx1) / 2 < cx1
                                AND cy0 <= (by0 + by1) / 2 AND (by0 + by1) / 2 < cy1) AS score,
           min(conf) AS conf, whole    -- one polygon of one probability mosaic: the same conf in every tile
    FROM q
    GROUP BY whole
    HAVING max(ci) - min(ci) < 8 AND max(cj) - min(cj) < 8
       AND count(*) = (max(ci) - min(ci) + 1) * (max(cj) - min(cj) + 1)
       AND bit_count(bit_or(1::bigint << (ci %% 8 + 8 * (cj %% 8)))::bit(64)) = count(*)
       AND (min(bx0) > min(cx0) OR min(cx0) = 0) AND (min(bx1) < max(cx1) OR max(cx1) = %(width)s)
       AND (min(by0) > min(cy0) OR min(cy0) = 0) AND (min(by1) < max(cy1) OR max(cy1) = %(height)s)
), pieces AS (
    SELECT NULL::bigint AS pred_id, score,
           NULL::integer AS cx0, NULL::integer AS cy0, NULL::integer AS cx1, NULL::integer AS cy1,
           NULL::integer AS x0, NULL::integer AS y0, NULL::integer AS x1, NULL::integer AS y1, true AS complete,
           whole AS piece, NULL::geometry AS whole, conf
    FROM whole
    UNION ALL
    SELECT q.pred_id, q.score, q.cx0, q.cy0, q.cx1, q.cy1, q.x0, q.y0, q.x1, q.y1,
           (q.bx0 > q.x0 OR q.x0 = 0) AND (q.bx1 < q.x1 OR q.x1 = %(width)s)
           AND (q.by0 > q.y0 OR q.y0 = 0) AND (q.by1 < q.y1 OR q.y1 = %(height)s),
           d.geom, q.whole, q.conf
    FROM q
    CROSS JOIN LATERAL ST_Dump(CASE WHEN q.inside THEN q.whole
                                    ELSE ST_ClipByBox2D(q.whole, ST_MakeBox2D(ST_Point(q.cx0, q.cy0),
                                                                              ST_Point(q.cx1, q.cy1))) END) d
    WHERE NOT EXISTS (SELECT 1 FROM whole w WHERE w.whole = q.whole)
      AND (q.inside OR (ST_Dimension(d.geom) = 2 AND NOT ST_IsEmpty(d.geom)))
)
SELECT row_number() OVER () AS piece_id, pred_id, score, ST_Area(piece) AS area, ST_Area(whole) AS warea,
       px0, py0, px1, py1, cx0, cy0, cx1, cy1, x0, y0, x1, y1, complete,
       pred_id IS NOT NULL AND (px0 <= cx0 OR px1 >= cx1 OR py0 <= cy0 OR py1 >= cy1) AS edge,
       piece, whole, conf           -- fixed-width columns first: cheaper to read out of a row
FROM (SELECT pieces.*, ST_XMin(bb) AS px0, ST_YMin(bb) AS py0, ST_XMax(bb) AS px1, ST_YMax(bb) AS py1
      FROM (SELECT *, Box3D(piece) AS bb FROM pieces OFFSET 0) pieces
      OFFSET 0) s;
ANALYZE dedup_pieces (piece_id, edge, px0, py0, px1, py1, cx0, cy0, cx1, cy1);
