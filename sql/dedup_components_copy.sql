COPY dedup_comp (piece_id, comp) FROM STDIN WITH (FORMAT csv)
