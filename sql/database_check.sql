-- Can the pipeline use this database? (footprints.db.check_database)
-- the role, the database, the schema new tables go to (NULL: none of the search path exists),
-- whether the role may create there, and whether PostGIS is installed.
SELECT current_user,
       current_database(),
       current_schema(),
       current_schema() IS NOT NULL AND has_schema_privilege(current_schema(), 'CREATE'),
       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis');
