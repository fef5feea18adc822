COPY dedup_comp (piece_id, comp, same) FROM STDIN WITH (FORMAT csv)
