SELECT 1 FROM table_updates WHERE update_id = %(update_id)s LIMIT 1;
