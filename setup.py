"""footprints: building footprints from satellite imagery with Luigi, PostGIS and Keras."""
from setuptools import find_packages, setup

setup(
    name="footprints",
    version="0.1.0",
    description="Luigi + PostGIS + Keras pipeline for building footprints in satellite imagery",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # the library (footprints), the Keras side (models), the Luigi stages (tasks) and the DAG entry
    # (pipeline); the top-level sql/ directory ships inside the library as ``footprints.sql``
    packages=find_packages(include=["footprints", "footprints.*", "pipeline", "pipeline.*", "tasks", "tasks.*",
                                    "models", "models.*"]) + ["footprints.sql"],
    package_dir={"footprints.sql": "sql"},
    package_data={"footprints.sql": ["*.sql"], "footprints": ["web/*"]},
    include_package_data=True,
    install_requires=[
        "luigi>=3.5",
        "tensorflow-cpu>=2.16; platform_machine=='x86_64'",
        "keras>=3.3",
        # GDAL's Python bindings (osgeo) are built by scripts/setup.sh against the system libgdal
        "gdal",
        "rasterio>=1.3",
        "shapely>=2.0",
        "psycopg2-binary>=2.9",
        "tenacity>=8",  # footprints/db.py: waits for a server that is down or restarting
        "geopandas>=0.14",
        "pyogrio>=0.7",
        "msgspec>=0.18",  # footprints/geojson.py: fast GeoJSON parsing (raw JSON fields)
        "pandas>=2.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "pillow>=10",
        "tensorboard>=2.16",
        # models/service.py (`footprints serve`): the HTTP server; streams request bodies to disk
        "aiohttp>=3.9",
        # models/engines.py: PredictImage's CPU engine ([predict] engine = auto picks ONNX Runtime on
        # CPU-only float32 hosts; the model is exported once with tf2onnx), Keras stays the fallback
        "onnxruntime>=1.17; platform_machine=='x86_64'",
        "tf2onnx>=1.16; platform_machine=='x86_64'",
        "onnx>=1.15; platform_machine=='x86_64'",
        # luigid's task history in PostgreSQL ([task_history] db_connection, luigid.cfg)
        "sqlalchemy>=1.4,<2.1",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80", "pyyaml>=6", "pytest-timeout>=2.1", "ruff>=0.6"],
        # the other CPU engine bench/inference.py compares ([predict] engine = openvino)
        "openvino": ["openvino>=2024.0; platform_machine=='x86_64'"],
    },
    entry_points={
        "console_scripts": ["footprints=footprints.cli:main"],
        # commands of the `footprints` CLI that live in another layer (footprints/ never imports models/)
        "footprints.commands": ["serve=models.service:main"],
    },
)
