-- LoadLabels: the partitions of `labels` among the given names (the source's current
-- partition, if any). A catalog lookup: it takes no lock on `labels`.
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'labels'::regclass AND c.relname = ANY(%(names)s)
ORDER BY c.relname;
