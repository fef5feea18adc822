INSERT INTO table_updates (update_id, target_table, inserted)
VALUES (%(update_id)s, %(target_table)s, now())
ON CONFLICT (update_id) DO UPDATE SET inserted = EXCLUDED.inserted;
