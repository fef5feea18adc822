# Connection and workspace defaults, sourced by the Makefile. Anything already set wins.
export PGHOST="${PGHOST:-127.0.0.1}"
export PGPORT="${PGPORT:-5432}"
export PGDATABASE="${PGDATABASE:-footprints}"
export PGUSER="${PGUSER:-footprints}"
export FOOTPRINTS_WORKDIR="${FOOTPRINTS_WORKDIR:-$PWD/workspace}"
export LUIGI_CONFIG_PATH="${LUIGI_CONFIG_PATH:-$PWD/luigi.cfg}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
