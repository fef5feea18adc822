DELETE FROM labels WHERE source = %(source)s;
