"""Label files into PostGIS: parsing (CRS, the fast numpy path), cleaning, the binary COPY
encoder and the load itself. ``load_labels(conn, path, override, progress)`` is the entry."""
from footprints.labels.clean import clean_geometries, polygon_parts
from footprints.labels.copy import (
    CHUNK,
    COPY_COLUMNS,
    COPY_HEADER,
    COPY_TRAILER,
    ChunkReader,
    copy_binary_rows,
    ewkb_fields,
    label_chunks,
    ragged_ewkb_fields,
)
from footprints.labels.load import file_digest, load_labels, partition_names, source_name
from footprints.labels.parse import (
    Ragged,
    check_lonlat,
    feature_geometries,
    open_label_file,
    open_label_stream,
    polygon_coordinates,
    read_label_file,
    resolve_crs,
)
from footprints.labels.report import LabelReport, gc_paused

__all__ = [
    "CHUNK", "COPY_COLUMNS", "COPY_HEADER", "COPY_TRAILER", "ChunkReader", "LabelReport", "Ragged",
    "check_lonlat", "clean_geometries", "copy_binary_rows", "ewkb_fields", "feature_geometries", "file_digest",
    "gc_paused", "label_chunks", "load_labels", "open_label_file", "open_label_stream", "partition_names", "polygon_coordinates",
    "polygon_parts", "ragged_ewkb_fields", "read_label_file", "resolve_crs", "source_name",
]
