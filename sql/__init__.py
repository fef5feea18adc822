"""SQL files of footprints, one purpose per file; shipped as the package data `footprints.sql`."""
