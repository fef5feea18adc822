COPY dedup_comp (piece_id, comp, whole_of) FROM STDIN WITH (FORMAT csv)
