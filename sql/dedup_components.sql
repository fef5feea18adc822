-- DeduplicateBorders, step 3: the links, for the connected components (computed by
-- tasks.dedup.components and copied back into dedup_comp with dedup_components_copy.sql).
-- same: every link of the piece's component joins two identical whole polygons.
DROP TABLE IF EXISTS dedup_comp;
CREATE TEMP TABLE dedup_comp (piece_id bigint NOT NULL, comp bigint NOT NULL, same boolean NOT NULL) ON COMMIT DROP;
SELECT a, b, same FROM dedup_links;
