-- DeduplicateBorders, step 1: clip the predictions of (run, image) that reach their tile core's
-- outline to that core.
-- Cores partition the image, so the pieces of different tiles never overlap (the duplicates that
-- overlapping windows produce are gone), and every building is the union of its pieces.
-- Pixel-exact polygons clipped by integer rectangles stay exact, and their edges on a core line
-- coincide with their neighbours'. Decided on the exact extent (Box2D) without GEOS:
--   * strictly inside the core (not even touching its outline): a whole building, which
--     buildings_insert.sql takes straight from `predictions` (the same test, negated here);
--   * outside the core: another tile's business, dropped;
--   * the rest: clipped with ST_ClipByBox2D (GEOS' rectangle intersection: the same pieces as
--     ST_Intersection on these rectilinear polygons, ten times faster).
-- Per piece: its extent (px0..py1), its core (cx0..cy1), the tile's whole polygon and the
-- window the tile read (x0..y1), which step 2 compares; edge: the piece reaches the core's outline, so the
-- building may go on in a neighbouring core.
DROP TABLE IF EXISTS dedup_pieces;
CREATE TEMP TABLE dedup_pieces ON COMMIT DROP AS
WITH p AS (
    SELECT pr.id AS pred_id, pr.score, pr.geom_pix AS whole, Box2D(pr.geom_pix) AS bb,
           t.cx0, t.cy0, t.cx1, t.cy1, t.x0, t.y0, t.x1, t.y1
    FROM predictions pr
    JOIN dedup_tiles t ON t.tile_id = pr.tile_id
    WHERE pr.run = %(run)s AND pr.image = %(image)s
), q AS (
    SELECT *, (ST_XMin(bb) >= cx0 AND ST_XMax(bb) <= cx1 AND ST_YMin(bb) >= cy0 AND ST_YMax(bb) <= cy1) AS inside
    FROM p
    WHERE ST_XMin(bb) < cx1 AND ST_XMax(bb) > cx0 AND ST_YMin(bb) < cy1 AND ST_YMax(bb) > cy0
      AND NOT (ST_XMin(bb) > cx0 AND ST_XMax(bb) < cx1 AND ST_YMin(bb) > cy0 AND ST_YMax(bb) < cy1)
), pieces AS (
    SELECT pred_id, score, whole, whole AS piece, bb, cx0, cy0, cx1, cy1, x0, y0, x1, y1
    FROM q WHERE inside
    UNION ALL
    SELECT pred_id, score, whole, d.geom, Box2D(d.geom), cx0, cy0, cx1, cy1, x0, y0, x1, y1
    FROM q, LATERAL ST_Dump(ST_ClipByBox2D(whole, ST_MakeBox2D(ST_Point(cx0, cy0), ST_Point(cx1, cy1)))) d
    WHERE NOT inside AND ST_Dimension(d.geom) = 2 AND NOT ST_IsEmpty(d.geom)
), marked AS (
    SELECT *, ST_XMin(bb) AS px0, ST_YMin(bb) AS py0, ST_XMax(bb) AS px1, ST_YMax(bb) AS py1
    FROM pieces
)
SELECT row_number() OVER () AS piece_id, pred_id, score, piece, whole,
       px0, py0, px1, py1, cx0, cy0, cx1, cy1, x0, y0, x1, y1,
       (px0 <= cx0 OR px1 >= cx1 OR py0 <= cy0 OR py1 >= cy1) AS edge
FROM marked;
ANALYZE dedup_pieces;
