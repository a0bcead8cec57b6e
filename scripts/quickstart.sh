#!/usr/bin/env bash
# Quick start: install orchestrate, train the example model, deploy it on this machine,
# call it, show its status, and leave it running.
#
#   bash scripts/quickstart.sh
#
# Idempotent: a second run reuses the trained model in .quickstart/model (delete that
# directory to train a fresh one) and redeploys it to the same endpoint, iris-demo.
# Set ORCHESTRATE_PYTHON to choose the interpreter (default: python3, or a .venv in the
# repository when python3 is Debian's externally managed one).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"
# shellcheck source=scripts/_common.sh
source "$REPO_ROOT/scripts/_common.sh"

NAME=iris-demo
MODEL_DIR="$REPO_ROOT/.quickstart/model"

choose_python
command -v curl >/dev/null || apt_install ca-certificates curl

# [fast] brings uv (fast model virtualenvs); [example] brings mlflow and scikit-learn, which
# only the example's training needs (the test extra's flavors, JAX among them, are not needed).
log "installing orchestrate with $PYTHON"
PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check -e '.[fast,example]'
ORCHESTRATE="$(python_scripts_dir)/orchestrate"
[ -x "$ORCHESTRATE" ] || die "orchestrate was not installed at $ORCHESTRATE"

if [ -f "$MODEL_DIR/MLmodel" ]; then
    log "reusing the example model in $MODEL_DIR"
else
    log "training the example model into $MODEL_DIR"
    rm -rf "$MODEL_DIR"
    mkdir -p "$(dirname "$MODEL_DIR")"
    "$PYTHON" examples/train_model.py "$MODEL_DIR"
fi
INPUT="$MODEL_DIR/serving_input_example.json"

log "orchestrate deploy $MODEL_DIR --target local --name $NAME"
"$ORCHESTRATE" deploy "$MODEL_DIR" --target local --name "$NAME"

log "orchestrate predict $NAME -i $INPUT"
"$ORCHESTRATE" predict "$NAME" -i "$INPUT"
echo

URL="$("$ORCHESTRATE" status "$NAME" --json | "$PYTHON" -c '
import json, sys
url = json.load(sys.stdin).get("url")
if not url:
    sys.exit("orchestrate status --json shows no url: is the endpoint live?")
url = url.rstrip("/")
print(url if url.endswith("/invocations") else url + "/invocations")
')"
log "curl $URL"
curl --fail-with-body --silent --show-error \
    -H 'Content-Type: application/json' --data @"$INPUT" "$URL"
echo

log "orchestrate status $NAME"
"$ORCHESTRATE" status "$NAME"

# Print the short command when `orchestrate` is on PATH.
SHOWN="$ORCHESTRATE"
command -v orchestrate >/dev/null && SHOWN=orchestrate
cat <<EOF

The endpoint $NAME is still running at ${URL%/invocations}.
  Call it:   $SHOWN predict $NAME -i $INPUT
  History:   $SHOWN history $NAME
  Stop it:   $SHOWN delete $NAME
EOF
