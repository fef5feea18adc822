# The footprints worker (also runs luigid). GDAL's Python bindings are built against
# Debian's libgdal, as scripts/setup.sh does on a bare machine.
FROM python:3.11-slim-bookworm
ARG TF_PACKAGE=tensorflow-cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgdal-dev gdal-bin build-essential postgresql-client \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN pip install --no-cache-dir --upgrade pip setuptools wheel numpy \
 && pip install --no-cache-dir --no-build-isolation "gdal[numpy]==$(gdal-config --version)" \
 && python -c "from osgeo import gdal_array"
COPY setup.py README.md ./
COPY pipeline pipeline
COPY tasks tasks
COPY models models
COPY sql sql
COPY luigi.cfg luigid.cfg ./
RUN pip install --no-cache-dir -e . "${TF_PACKAGE}"
ENV LUIGI_CONFIG_PATH=/app/luigi.cfg FOOTPRINTS_WORKDIR=/workspace TF_CPP_MIN_LOG_LEVEL=2
