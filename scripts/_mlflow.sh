# The MLflow tracking server for the test suite (sourced by scripts/test.sh, not run): a real
# `mlflow server` with its model registry on 127.0.0.1, artifacts proxied (`--serve-artifacts`,
# so `mlflow-artifacts:/` URIs work). Checks first and only starts it when it does not answer,
# so running it again is cheap. It outlives the script; later runs find it up.
# Expects REPO_ROOT, PYTHON, log/die from scripts/_common.sh, and `set -euo pipefail`.
#
# Exports for the tests:
#   ORCHESTRATE_TEST_MLFLOW_URI   http://127.0.0.1:PORT of the tracking server
#
# Knobs: ORCHESTRATE_TEST_MLFLOW_PORT (default 15050); ORCHESTRATE_TEST_MLFLOW_DIR (default
# ${XDG_CACHE_HOME:-~/.cache}/orchestrate-test/mlflow) holds its SQLite store, artifacts and log.

MLFLOW_TEST_PORT="${ORCHESTRATE_TEST_MLFLOW_PORT:-15050}"
MLFLOW_TEST_DIR="${ORCHESTRATE_TEST_MLFLOW_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/orchestrate-test/mlflow}"

mlflow_answers() {
    curl -sf -o /dev/null "http://127.0.0.1:$1/health" 2>/dev/null
}

setup_mlflow_server() {
    local url="http://127.0.0.1:$MLFLOW_TEST_PORT" i
    command -v curl >/dev/null || apt_install curl
    if mlflow_answers "$MLFLOW_TEST_PORT"; then
        log "MLflow tracking server already up at $url"
    else
        mkdir -p "$MLFLOW_TEST_DIR/artifacts"
        log "starting the MLflow tracking server at $url (data and log in $MLFLOW_TEST_DIR)"
        # setsid + nohup: the server outlives this script. One worker: the machine is small.
        setsid nohup "$PYTHON" -m mlflow server --host 127.0.0.1 --port "$MLFLOW_TEST_PORT" --workers 1 \
            --backend-store-uri "sqlite:///$MLFLOW_TEST_DIR/mlflow.db" \
            --artifacts-destination "$MLFLOW_TEST_DIR/artifacts" --serve-artifacts \
            >>"$MLFLOW_TEST_DIR/server.log" 2>&1 </dev/null &
        # The first start creates the database schema, which takes a while.
        for i in $(seq 1 240); do
            mlflow_answers "$MLFLOW_TEST_PORT" && break
            [ "$i" -eq 240 ] && die "the MLflow tracking server did not answer at $url; see $MLFLOW_TEST_DIR/server.log"
            sleep 0.5
        done
        log "MLflow tracking server ready at $url"
    fi
    export ORCHESTRATE_TEST_MLFLOW_URI="$url"
}
