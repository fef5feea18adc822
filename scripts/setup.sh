#!/usr/bin/env bash
# Idempotent set-up shared by `make demo` and `make test`:
#   1. apt: PostGIS for the local PostgreSQL major version, GDAL headers + tools, python venv,
#      chromium (headless, for the map page's test) and npm where there is none
#   2. a running PostgreSQL server (starts the local cluster if it is down)
#   3. role $PGUSER (no superuser), database $PGDATABASE with PostGIS, template db for tests
#   4. .venv with GDAL's Python bindings built against the system libgdal, then `pip install -e .[test,openvino]`
#   5. npm ci: Leaflet for the map page of `footprints serve` (node_modules/)
# A second run only checks and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# ---------------------------------------------------------------- 1. apt packages
pg_major() {
  if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_lsclusters -h 2>/dev/null | head -1)" ]; then
    pg_lsclusters -h | awk 'NR==1{print $1}'
  elif [ -d /etc/postgresql ] && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    ls /etc/postgresql | sort -V | tail -1
  else
    echo ""
  fi
}
PGV="$(pg_major)"
want=()
if [ -z "$PGV" ]; then
  is_local_pg=0
  case "$PGHOST" in 127.0.0.1|localhost|/*) is_local_pg=1 ;; esac
  if [ "$is_local_pg" = 1 ] && ! pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; then
    want+=(postgresql postgresql-contrib)
  fi
else
  dpkg -s "postgresql-$PGV-postgis-3" >/dev/null 2>&1 || want+=("postgresql-$PGV-postgis-3")
fi
# chromium: the headless browser of the map page's screenshot test (tests/models/test_service_map.py)
for p in libgdal-dev gdal-bin python3-venv python3-dev build-essential chromium; do
  dpkg -s "$p" >/dev/null 2>&1 || want+=("$p")
done
# npm installs the map page's JavaScript (package.json); a node from elsewhere (e.g. nodesource) is kept
command -v npm >/dev/null 2>&1 || want+=(nodejs npm)
if [ "${#want[@]}" -gt 0 ]; then
  log "apt-get install ${want[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want[@]}" >/dev/null
  PGV="$(pg_major)"
  if [ -n "$PGV" ] && ! dpkg -s "postgresql-$PGV-postgis-3" >/dev/null 2>&1; then
    log "apt-get install postgresql-$PGV-postgis-3"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "postgresql-$PGV-postgis-3" >/dev/null
  fi
fi

# ---------------------------------------------------------------- 2. a running server
if ! pg_isready -q -h "$PGHOST" -p "$PGPORT"; then
  if [ -n "$PGV" ]; then
    log "starting PostgreSQL $PGV cluster"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$PGV" main start || $SUDO pg_ctlcluster "$PGV" main start
    for _ in $(seq 1 30); do pg_isready -q -h "$PGHOST" -p "$PGPORT" && break; sleep 1; done
  fi
  pg_isready -q -h "$PGHOST" -p "$PGPORT" || { echo "PostgreSQL is not reachable at $PGHOST:$PGPORT" >&2; exit 1; }
fi

# ---------------------------------------------------------------- 3. roles and databases
# Superuser work (CREATE EXTENSION) runs as `postgres`: over TCP when trust auth allows it,
# otherwise through the local socket as the postgres OS user.
PGSU_USER="${PGSUPERUSER:-postgres}"
su_psql() {
  if psql -X -q -h "$PGHOST" -p "$PGPORT" -U "$PGSU_USER" -d postgres -c 'select 1' >/dev/null 2>&1; then
    psql -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGSU_USER" "$@"
  elif [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" "$@"
  else
    sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" "$@"
  fi
}
su_psql -d postgres -v role="$PGUSER" -v pw="${PGPASSWORD:-}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') WHERE :'pw' <> '' \gexec
SQL
prepare_db() {  # $1 = database name
  su_psql -d postgres -v db="$1" -v role="$PGUSER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
  su_psql -d "$1" -v role="$PGUSER" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS postgis;
-- the pipeline registers custom (non-EPSG) CRSs here without superuser rights
SELECT format('GRANT SELECT, INSERT, UPDATE ON spatial_ref_sys TO %I', :'role') \gexec
SQL
}
prepare_db "$PGDATABASE"
# template that the test suite clones into throw-away databases
prepare_db footprints_template
su_psql -d postgres -c "UPDATE pg_database SET datistemplate = true WHERE datname = 'footprints_template'" >/dev/null

# ---------------------------------------------------------------- 4. python environment
PYTHON="${PYTHON:-python3}"
VENV_DIR="${VENV:-.venv}"
if [ ! -x "$VENV_DIR/bin/python" ]; then
  log "creating $VENV_DIR"
  "$PYTHON" -m venv "$VENV_DIR"
fi
VPY="$VENV_DIR/bin/python"
GDAL_VERSION="$(gdal-config --version)"
stamp="$VENV_DIR/.footprints-setup-$( (cat setup.py; echo "$GDAL_VERSION") | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing Python packages into $VENV_DIR (first run takes a few minutes)"
  "$VPY" -m pip install -q --upgrade pip setuptools wheel numpy
  if ! "$VPY" -c 'from osgeo import gdal, gdal_array' 2>/dev/null; then
    log "building GDAL $GDAL_VERSION Python bindings against the system libgdal"
    "$VPY" -m pip install -q --no-cache-dir --no-build-isolation --force-reinstall --no-deps "gdal[numpy]==$GDAL_VERSION"
  fi
  "$VPY" -c 'from osgeo import gdal, gdal_array' || { echo "osgeo.gdal_array failed to import after building GDAL $GDAL_VERSION" >&2; exit 1; }
  "$VPY" -m pip install -q -e '.[test,openvino]'
  "$VPY" -c 'from osgeo import gdal_array; import rasterio, luigi, keras, psycopg2, shapely, geopandas' \
    || { echo "python environment is incomplete" >&2; exit 1; }
  rm -f "$VENV_DIR"/.footprints-setup-*
  touch "$stamp"
fi
"$VPY" -c 'from osgeo import gdal_array' 2>/dev/null || { rm -f "$stamp"; echo "osgeo.gdal_array is missing; rerun set-up" >&2; exit 1; }
# ---------------------------------------------------------------- 5. the map page's JavaScript
# `footprints serve` serves Leaflet from node_modules (nothing loads from the internet at run
# time); npm ci installs exactly package-lock.json, again only when the lock file changed
if [ ! -f node_modules/leaflet/dist/leaflet.js ] || ! cmp -s package-lock.json node_modules/.footprints-lock; then
  log "npm ci (the map page's JavaScript)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  cp package-lock.json node_modules/.footprints-lock
fi
log "ready: PostgreSQL $PGHOST:$PGPORT db=$PGDATABASE user=$PGUSER, venv $VENV_DIR, workdir $FOOTPRINTS_WORKDIR"
