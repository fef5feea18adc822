-- DeduplicateBorders, step 3: connected components of the links (a building may span many
-- cores). Label propagation: every linked piece takes the smallest label among its neighbours
-- until nothing changes; the number of rounds is the longest chain of pieces, not the row count.
DROP TABLE IF EXISTS dedup_adj;
CREATE TEMP TABLE dedup_adj ON COMMIT DROP AS
SELECT a AS x, b AS y FROM dedup_links UNION ALL SELECT b, a FROM dedup_links;
CREATE INDEX ON dedup_adj (y);

DROP TABLE IF EXISTS dedup_comp;
CREATE TEMP TABLE dedup_comp ON COMMIT DROP AS
SELECT DISTINCT x AS piece_id, x AS comp FROM dedup_adj;
ALTER TABLE dedup_comp ADD PRIMARY KEY (piece_id);
ANALYZE dedup_adj;
ANALYZE dedup_comp;

DO $$
BEGIN
    LOOP
        UPDATE dedup_comp c SET comp = m.comp
        FROM (SELECT j.x, min(n.comp) AS comp
              FROM dedup_adj j JOIN dedup_comp n ON n.piece_id = j.y
              GROUP BY j.x) m
        WHERE c.piece_id = m.x AND m.comp < c.comp;
        EXIT WHEN NOT FOUND;
    END LOOP;
END $$;
