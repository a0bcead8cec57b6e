#!/usr/bin/env bash
# Bring up everything the test suite needs, idempotently, then run pytest.
#
#   bash scripts/test.sh [PYTEST ARGS...]      e.g. bash scripts/test.sh -k lease -x
#
# Works as root on a fresh Debian bookworm machine that can reach only the Debian and
# PyPI package registries, and on a developer machine where things are already set up
# (then it only checks and starts what is down). CI calls it through .ci/run.
#
# What it does:
#   1. PostgreSQL: installs the server (apt) if missing, creates and starts a cluster,
#      creates the role and database the tests use (password auth on 127.0.0.1).
#   2. Services for later issues: the Docker engine, the base image and two local
#      registries (scripts/_docker.sh); emulators: see the marked section below.
#   3. Installs orchestrate in editable mode with the [test] extra (skipped when
#      pyproject.toml has not changed since the last install).
#   4. Lints and type-checks (scripts/check.sh: ruff, mypy strict) and stops on any finding.
#   5. Runs `python -m pytest "$@"` with ORCHESTRATE_TEST_PG_URL exported, and exits with
#      pytest's exit code. Exit code 5 (no tests collected) is an error, not a success.
#
# Environment knobs:
#   ORCHESTRATE_PYTHON         interpreter to install into and test with (default: python3,
#                              or a .venv in the repository when python3 is Debian's
#                              externally managed one)
#   ORCHESTRATE_TEST_REINSTALL=1   reinstall the package even if pyproject.toml is unchanged
#   ORCHESTRATE_TEST_CHECKS=0      skip step 4 (while iterating on one test; CI never sets it)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"

PG_USER=orchestrate
PG_PASSWORD=orchestrate
PG_DB=orchestrate_test

# shellcheck source=scripts/_common.sh
source "$REPO_ROOT/scripts/_common.sh"

# --- 1. PostgreSQL ---------------------------------------------------------------------

pg_server_installed() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

setup_postgres() {
    if ! pg_server_installed; then
        log "installing PostgreSQL (apt-get install postgresql)"
        apt_install postgresql
    fi
    pg_server_installed || die "PostgreSQL server binaries not found after installing postgresql"

    # pg_lsclusters -h: "VERSION NAME PORT STATUS OWNER DATADIR LOGFILE", one per line.
    local cluster
    cluster="$(pg_lsclusters -h | sort -k1,1nr | awk "NR == 1")"
    if [ -z "$cluster" ]; then
        local version
        version="$(basename "$(dirname "$(dirname "$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | awk "END { print }")")")")"
        log "creating PostgreSQL cluster $version/main"
        as_root pg_createcluster "$version" main
        cluster="$(pg_lsclusters -h | sort -k1,1nr | awk "NR == 1")"
    fi
    local version name port status
    read -r version name port status _ <<<"$cluster"

    if [ "$status" != "online" ]; then
        log "starting PostgreSQL cluster $version/$name on port $port"
        as_root pg_ctlcluster "$version" "$name" start
    fi
    local i
    for i in $(seq 1 60); do
        if pg_isready -q -h 127.0.0.1 -p "$port"; then break; fi
        [ "$i" -eq 60 ] && die "PostgreSQL $version/$name did not accept connections on 127.0.0.1:$port (see /var/log/postgresql/postgresql-$version-$name.log)"
        sleep 0.5
    done

    # CREATEDB: the fresh_pg_url fixture creates (and drops) one database per test.
    as_postgres psql -q -X -v ON_ERROR_STOP=1 -p "$port" -d postgres <<SQL
DO \$\$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
        ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
    ELSE
        CREATE ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
    END IF;
END
\$\$;
SQL
    if [ "$(as_postgres psql -X -tA -p "$port" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != "1" ]; then
        log "creating database $PG_DB"
        as_postgres createdb -p "$port" -O "$PG_USER" "$PG_DB"
    fi

    export ORCHESTRATE_TEST_PG_URL="postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
    log "PostgreSQL ready: $ORCHESTRATE_TEST_PG_URL"
}

# --- 2. Services added by later issues --------------------------------------------------
#
# >>> LATER ISSUES: ADD SERVICE SET-UP HERE <<<
# Each one idempotent (check, then install/start only what is missing or down), each
# exporting what the tests need to find it. Planned, in this order (design.md section 8):
#   - Docker engine (see "This machine" in DEVELOPERS.md), e.g. setup_docker
#   - the base image, built locally, e.g. setup_base_image
#   - a local OCI registry container, e.g. setup_registry
#   - emulators under tests/ (moto server, Azure ML fake), e.g. setup_emulators
# shellcheck source=scripts/_docker.sh
source "$REPO_ROOT/scripts/_docker.sh"   # Docker engine, base image, registries
# shellcheck source=scripts/_mlflow.sh
source "$REPO_ROOT/scripts/_mlflow.sh"   # MLflow tracking server (needs the installed package)

setup_later_services() {
    setup_docker_services
}

# --- 3. The package ---------------------------------------------------------------------

install_package() {
    local cache_dir stamp want
    cache_dir="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/orchestrate-test"
    mkdir -p "$cache_dir"
    stamp="$cache_dir/install-$(printf '%s' "$REPO_ROOT|$PYTHON" | sha256sum | cut -c1-16)"
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ "${ORCHESTRATE_TEST_REINSTALL:-0}" != "1" ] && [ -f "$stamp" ] \
        && [ "$(cat "$stamp")" = "$want" ] \
        && "$PYTHON" -c 'import importlib.metadata as m; m.distribution("orchestrate")' 2>/dev/null; then
        log "orchestrate[test] already installed for $PYTHON (pyproject.toml unchanged)"
        return
    fi
    log "installing orchestrate[test] (editable) with $PYTHON"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'
    printf '%s\n' "$want" >"$stamp"
}

# --- 4. Lint and type checks -------------------------------------------------------------

run_checks() {
    if [ "${ORCHESTRATE_TEST_CHECKS:-1}" = "0" ]; then
        log "skipping the lint and type checks (ORCHESTRATE_TEST_CHECKS=0)"
        return
    fi
    ORCHESTRATE_PYTHON="$PYTHON" bash "$REPO_ROOT/scripts/check.sh" \
        || die "the lint and type checks failed (above); pytest did not run"
}

# --- 5. Run ------------------------------------------------------------------------------

setup_postgres
setup_later_services
choose_python
install_package
run_checks
setup_mlflow_server

log "running: $PYTHON -m pytest $*"
set +e
"$PYTHON" -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    printf 'scripts/test.sh: error: pytest collected no tests (exit code 5)\n' >&2
fi
exit "$rc"
