"""footprints: the library under the Luigi pipeline.

Pure functions and classes grouped by concern (geometry and windows, GeoJSON, labels, the
SpaceNet and SCOT metrics, tile stitching, SQL access, the demo generator, the CLI). Nothing
here imports luigi, ``tasks``, ``pipeline`` or ``models``: the arrows run
``pipeline`` -> ``tasks`` -> ``models`` -> ``footprints``.
"""
__version__ = "0.1.0"
