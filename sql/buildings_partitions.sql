-- The partitions of `buildings` among the given names (DeduplicateBorders: the batch's current
-- partition, if any). A catalog lookup: it takes no lock on `buildings`.
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'buildings'::regclass AND c.relname = ANY(%(names)s)
ORDER BY c.relname;
