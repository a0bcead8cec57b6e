#!/usr/bin/env bash
# Lint, format and type-check: ruff check on orchestrator/, targets/, scoring/ and tests/,
# ruff format --check and mypy (strict) on orchestrator/, targets/ and scoring/, all configured
# in pyproject.toml. scripts/test.sh runs this before pytest; alone, with an interpreter that
# has the [test] extra installed:
#
#   ORCHESTRATE_PYTHON=.venv/bin/python bash scripts/check.sh
#
# Both tools run even when the first finds something, so one run shows everything; the exit code
# is 1 when either found anything. mypy keeps its cache in .mypy_cache/ (a few seconds warm).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"

# shellcheck source=scripts/_common.sh
source "$REPO_ROOT/scripts/_common.sh"

LINTED=(orchestrator targets scoring tests)
TYPED=(orchestrator targets scoring)
FORMATTED=(orchestrator targets scoring)

choose_python
for tool in ruff mypy; do
    "$PYTHON" -m "$tool" --version >/dev/null 2>&1 \
        || die "$tool is not installed for $PYTHON: install the test extra (pip install -e '.[test]'; scripts/test.sh does)"
done

start=$SECONDS
failed=()
log "lint: $PYTHON -m ruff check ${LINTED[*]}"
"$PYTHON" -m ruff check --quiet "${LINTED[@]}" || failed+=(ruff)
log "format: $PYTHON -m ruff format --check ${FORMATTED[*]}"
"$PYTHON" -m ruff format --check --quiet "${FORMATTED[@]}" || failed+=(format)
log "types: $PYTHON -m mypy ${TYPED[*]} (strict)"
"$PYTHON" -m mypy "${TYPED[@]}" || failed+=(mypy)

for tool in "${failed[@]}"; do
    case "$tool" in
        ruff) printf '%s: error: ruff found the problems listed above; fix them (`%s -m ruff check --fix` fixes those marked [*]), or, where the rule is wrong, add `# noqa: CODE -- why`\n' \
            "$(basename "$0")" "$PYTHON" >&2 ;;
        format) printf '%s: error: ruff format would rewrite the files listed above; run `%s -m ruff format %s`\n' \
            "$(basename "$0")" "$PYTHON" "${FORMATTED[*]}" >&2 ;;
        mypy) printf '%s: error: mypy (strict) found the type errors listed above; fix them, or, where the stubs are wrong, add `# type: ignore[code]` with a comment saying why\n' \
            "$(basename "$0")" >&2 ;;
    esac
done
[ "${#failed[@]}" -eq 0 ] || exit 1
log "lint and type checks passed ($((SECONDS - start)) s)"
