-- DeduplicateBorders, step 3: the links, for the connected components (computed by
-- tasks.dedup.components and copied back into dedup_comp with dedup_components_copy.sql).
DROP TABLE IF EXISTS dedup_comp;
CREATE TEMP TABLE dedup_comp (piece_id bigint PRIMARY KEY, comp bigint NOT NULL) ON COMMIT DROP;
SELECT a, b FROM dedup_links;
