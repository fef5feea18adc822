-- DeduplicateBorders, step 3: what tasks.dedup.whole_components needs of the pieces that links join
SELECT piece_id, pred_id, complete, area, warea FROM dedup_pieces WHERE edge;
