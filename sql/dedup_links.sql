-- DeduplicateBorders, step 2: which pieces in neighbouring cores are the same building.
-- Candidates: a piece that reaches the right (bottom) side of its core and a piece that reaches
-- the left (top) side of the next core, with overlapping extents along that line. Cores form a
-- grid, so this is a hash join on the neighbouring core, never a spatial self-join; a building
-- is 4-connected, so links across core sides (not corners) join all of its pieces.
-- Where the windows the two tiles read overlap (W: the tiling overlap plus the halo), both
-- tiles saw the same pixels there: the pieces are one building when the tiles' whole polygons
-- agree inside W -- identical there, or else sharing area > 0 and >= merge_overlap x the
-- smaller one's area inside W. Two buildings a pixel apart share no area, and buildings that the
-- 3-class head split apart do not overlap either, even where their split line lies on the core
-- line. "Identical there" is checked in two ways, the cheap one first:
--   * the two whole polygons are identical (same vertices, same order): the common case, a
--     building that both windows saw entirely (each whole lies in its own window, so both lie
--     in W, and so do their identical parts there);
--   * their parts in W (clipped, collinear vertices dropped, canonical order) are identical.
-- Where the windows only touch (tiling overlap 0 and no halo) no tile saw across the line: the
-- pieces are one building when they share a stretch of the core line at least min_shared_px long.
-- agree: the link is of the first kind (identical in W), which buildings_insert.sql relies on.
DROP TABLE IF EXISTS dedup_links;
CREATE TEMP TABLE dedup_links ON COMMIT DROP AS
WITH cand AS (
    SELECT a.piece_id AS a, b.piece_id AS b, a.piece AS pa, b.piece AS pb, a.whole AS wa, b.whole AS wb,
           greatest(a.x0, b.x0) AS x0, greatest(a.y0, b.y0) AS y0, least(a.x1, b.x1) AS x1, least(a.y1, b.y1) AS y1
    FROM dedup_pieces a JOIN dedup_pieces b ON b.cx0 = a.cx1 AND b.cy0 = a.cy0    -- b's core is right of a's
    WHERE a.edge AND b.edge AND a.px1 = a.cx1 AND b.px0 = b.cx0 AND a.py0 < b.py1 AND b.py0 < a.py1
    UNION ALL
    SELECT a.piece_id, b.piece_id, a.piece, b.piece, a.whole, b.whole,
           greatest(a.x0, b.x0), greatest(a.y0, b.y0), least(a.x1, b.x1), least(a.y1, b.y1)
    FROM dedup_pieces a JOIN dedup_pieces b ON b.cy0 = a.cy1 AND b.cx0 = a.cx0    -- b's core is below a's
    WHERE a.edge AND b.edge AND a.py1 = a.cy1 AND b.py0 = b.cy0 AND a.px0 < b.px1 AND b.px0 < a.px1
), w AS (
    SELECT a, b, pa, pb, wa, wb, x1 > x0 AND y1 > y0 AS overlapping,
           CASE WHEN x1 > x0 AND y1 > y0 THEN ST_MakeBox2D(ST_Point(x0, y0), ST_Point(x1, y1)) END AS w
    FROM cand
), clipped AS (
    SELECT a, b, pa, pb, wa, wb, overlapping, w,
           ST_Normalize(ST_Simplify(ST_ClipByBox2D(wa, w), 0)) AS ca,
           ST_Normalize(ST_Simplify(ST_ClipByBox2D(wb, w), 0)) AS cb
    FROM w
)
SELECT a, b, overlapping AND (ST_OrderingEquals(wa, wb) OR ST_OrderingEquals(ca, cb)) AS agree
FROM clipped
WHERE CASE
    WHEN NOT overlapping THEN ST_Length(ST_Intersection(pa, pb)) >= %(min_shared_px)s
    WHEN ST_OrderingEquals(wa, wb) THEN true
    WHEN ST_IsEmpty(ca) OR ST_IsEmpty(cb) THEN false
    WHEN ST_OrderingEquals(ca, cb) THEN true
    ELSE (SELECT i > 0 AND i >= %(merge_overlap)s * least(ST_Area(ca), ST_Area(cb))
          FROM (SELECT ST_Area(ST_Intersection(wa, wb)) AS i) s)
END;
