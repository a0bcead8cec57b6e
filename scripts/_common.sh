# Helpers shared by scripts/test.sh and scripts/quickstart.sh (sourced, not run).
# Expects REPO_ROOT to be set and `set -euo pipefail` in the caller.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# Commands that need root: run directly as root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

as_postgres() {
    # cd / so psql does not warn that it cannot read the caller's working directory.
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && sudo -u postgres "$@")
    fi
}

APT_UPDATED=0
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -q
        APT_UPDATED=1
    fi
    as_root apt-get install -y -q --no-install-recommends "$@"
}

choose_python() {
    if [ -n "${ORCHESTRATE_PYTHON:-}" ]; then
        PYTHON="$ORCHESTRATE_PYTHON"
        return
    fi
    if ! command -v python3 >/dev/null; then
        log "installing python3"
        apt_install python3 python3-venv
    fi
    # Debian's own python3 refuses `pip install` (PEP 668) and may lack pip: use a
    # virtualenv in the repository instead of fighting the system package manager.
    if python3 - <<'PY'
import pathlib, sys, sysconfig
managed = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()
try:
    import pip  # noqa: F401
except ImportError:
    sys.exit(1)
sys.exit(1 if managed and sys.prefix == sys.base_prefix else 0)
PY
    then
        PYTHON="$(command -v python3)"
    else
        if [ ! -x "$REPO_ROOT/.venv/bin/python" ]; then
            python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
            log "creating virtualenv $REPO_ROOT/.venv"
            python3 -m venv "$REPO_ROOT/.venv"
        fi
        PYTHON="$REPO_ROOT/.venv/bin/python"
    fi
}

# Where the interpreter's console scripts (`orchestrate`) are installed.
python_scripts_dir() {
    "$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'
}
