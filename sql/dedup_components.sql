-- DeduplicateBorders, step 3: the links and the pieces they join, for the connected components
-- (computed by tasks.dedup.components and tasks.dedup.whole_components, copied back into
-- dedup_comp with dedup_components_copy.sql). whole_of: the piece whose whole polygon is the
-- component's building (no union needed), or NULL.
DROP TABLE IF EXISTS dedup_comp;
CREATE TEMP TABLE dedup_comp (piece_id bigint NOT NULL, comp bigint NOT NULL, whole_of bigint) ON COMMIT DROP;
SELECT a, b, agree FROM dedup_links;
