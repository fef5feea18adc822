-- DeduplicateBorders, step 1: clip the predictions of (run, image) that reach their tile core's
-- outline to that core.
-- Cores partition the image, so the pieces of different tiles never overlap (the duplicates that
-- overlapping windows produce are gone), and every building is the union of its pieces.
-- Pixel-exact polygons clipped by integer rectangles stay exact, and their edges on a core line
-- coincide with their neighbours'. Decided on the exact extent (Box2D) without GEOS:
--   * strictly inside the core (not even touching its outline): a whole building, which
--     buildings_insert.sql takes straight from `predictions` (the same test, negated here);
--   * outside the core: another tile's business, dropped;
--   * inside the core but touching its outline: the piece is the polygon itself;
--   * the rest: clipped with ST_ClipByBox2D (GEOS' rectangle intersection: the same pieces as
--     ST_Intersection on these rectilinear polygons, ten times faster).
-- Per piece: its extent (px0..py1), its core (cx0..cy1), the tile's whole polygon and the
-- window the tile read (x0..y1), which step 2 compares; edge: the piece reaches the core's outline, so the
-- building may go on in a neighbouring core; the areas of the piece and of the whole polygon.
-- Each extent is computed once per row (the OFFSET 0 subqueries keep the planner from copying
-- the Box2D call into every comparison), and the pieces come out of one pass: no CTE is
-- materialized.
DROP TABLE IF EXISTS dedup_pieces;
CREATE TEMP TABLE dedup_pieces ON COMMIT DROP AS
WITH q AS (
    SELECT pr.id AS pred_id, pr.score, pr.geom_pix AS whole, t.cx0, t.cy0, t.cx1, t.cy1, t.x0, t.y0, t.x1, t.y1,
           (b.bx0 >= t.cx0 AND b.bx1 <= t.cx1 AND b.by0 >= t.cy0 AND b.by1 <= t.cy1) AS inside
    FROM predictions pr
    JOIN dedup_tiles t ON t.tile_id = pr.tile_id
    CROSS JOIN LATERAL (SELECT ST_XMin(bb) AS bx0, ST_YMin(bb) AS by0, ST_XMax(bb) AS bx1, ST_YMax(bb) AS by1
                        FROM (SELECT Box2D(pr.geom_pix) AS bb OFFSET 0) s) b
    WHERE pr.run = %(run)s AND pr.image = %(image)s
      AND b.bx0 < t.cx1 AND b.bx1 > t.cx0 AND b.by0 < t.cy1 AND b.by1 > t.cy0
      AND NOT (b.bx0 > t.cx0 AND b.bx1 < t.cx1 AND b.by0 > t.cy0 AND b.by1 < t.cy1)
), pieces AS (
    SELECT q.pred_id, q.score, q.whole, d.geom AS piece, x.px0, x.py0, x.px1, x.py1,
           q.cx0, q.cy0, q.cx1, q.cy1, q.x0, q.y0, q.x1, q.y1
    FROM q
    CROSS JOIN LATERAL ST_Dump(CASE WHEN q.inside THEN q.whole
                                    ELSE ST_ClipByBox2D(q.whole, ST_MakeBox2D(ST_Point(q.cx0, q.cy0),
                                                                              ST_Point(q.cx1, q.cy1))) END) d
    CROSS JOIN LATERAL (SELECT ST_XMin(bb) AS px0, ST_YMin(bb) AS py0, ST_XMax(bb) AS px1, ST_YMax(bb) AS py1
                        FROM (SELECT Box2D(d.geom) AS bb OFFSET 0) s) x
    WHERE q.inside OR (ST_Dimension(d.geom) = 2 AND NOT ST_IsEmpty(d.geom))
)
SELECT row_number() OVER () AS piece_id, pred_id, score, piece, whole, ST_Area(piece) AS area, ST_Area(whole) AS warea,
       px0, py0, px1, py1, cx0, cy0, cx1, cy1, x0, y0, x1, y1,
       (px0 <= cx0 OR px1 >= cx1 OR py0 <= cy0 OR py1 >= cy1) AS edge
FROM pieces;
ANALYZE dedup_pieces;
