"""Model environments: virtualenvs built from a model's requirements, cached by their hash."""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, PermanentTargetError, RetryableTargetError

_MLFLOW_PIN = re.compile(r"^mlflow(\[[^\]]*\])?(?P<spec>\s*[=<>!~].*)?$", re.IGNORECASE)
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def serving_requirements(requirements: Iterable[str]) -> list[str]:
    """Requirements to serve with: `mlflow==X` becomes `mlflow-skinny==X`.

    Serving needs mlflow's pyfunc loader, which the skinny package has; the full package adds
    the tracking server and UI, hundreds of MB serving never runs."""
    result = []
    for requirement in requirements:
        match = _MLFLOW_PIN.match(requirement.strip())
        result.append(f"mlflow-skinny{(match.group('spec') or '').strip()}" if match else requirement)
    return result


def uses_skinny(original: Sequence[str], serving: Sequence[str]) -> bool:
    return list(original) != list(serving)


def requirement_name(requirement: str) -> str:
    match = _REQUIREMENT_NAME.match(requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else requirement.strip().lower()


def apply_overrides(requirements: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Replace requirements by package name, or add them: `--pip-requirements-override`."""
    replaced = {requirement_name(o): o for o in overrides}
    kept = [r for r in requirements if requirement_name(r) not in replaced]
    return kept + list(overrides)


def parse_overrides(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@dataclass(frozen=True)
class Environment:
    path: Path
    key: str
    reused: bool
    installer: str
    requirements: tuple[str, ...]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def envs_dir(home: Path) -> Path:
    return Path(os.environ.get("ORCHESTRATE_ENVS_DIR") or home / "envs")


def find_python(version: str | None, override: str | None = None) -> tuple[str, str | None]:
    """An interpreter for the model, and a warning when it is not the version the model asks for."""
    if override:
        if not shutil.which(override) and not Path(override).is_file():
            raise ConfigError(f"python interpreter {override!r} not found", hint="give a path or a name on PATH")
        return override, None
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    wanted = ".".join((version or current).split(".")[:2])
    if wanted == current:
        return sys.executable, None
    on_path = shutil.which(f"python{wanted}")
    if on_path:
        return on_path, None
    return sys.executable, (
        f"the model was saved with Python {version}; no python{wanted} found, using Python {current} "
        f"(set -C python=/path/to/python{wanted} to choose)"
    )


def find_uv() -> str | None:
    """The uv executable (on PATH, or from the `uv` package), or None."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return None


def environment_key(python: str, requirements: Sequence[str]) -> str:
    version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, check=True).stdout.strip()
    document = json.dumps({"python": version, "requirements": sorted(requirements)})
    return hashlib.sha256(document.encode()).hexdigest()[:20]


def ensure_environment(
    *,
    home: Path,
    python: str,
    requirements: Sequence[str],
    installer: str = "auto",
    log: Callable[[str], None],
    log_file: Path,
) -> Environment:
    """The virtualenv for these requirements: reused when built before, else built now.

    Built in place under a file lock; a marker written last tells a finished env from one a
    crash interrupted, which is removed and rebuilt."""
    key = environment_key(python, requirements)
    root = envs_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    marker = path / ".orchestrate-env.json"
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():
            recorded = json.loads(marker.read_text())
            return Environment(path, key, True, recorded.get("installer", "?"), tuple(requirements))
        group_file = root / f"{key}.installer"
        _stop_stale_installer(group_file)
        if path.exists():
            log(f"removing the unfinished environment {path} (an earlier build stopped midway)")
            shutil.rmtree(path)
        uv = find_uv() if installer in ("auto", "uv") else None
        if installer == "uv" and uv is None:
            raise ConfigError("installer 'uv' asked for but uv is not installed", hint="pip install uv")
        used = "uv" if uv else "pip"
        log(f"building environment {key} with {used} ({len(requirements)} requirements)")
        try:
            if uv:
                _run([uv, "venv", "--quiet", "--python", python, str(path)], log_file, group_file)
                # uv, unlike pip, leaves bytecode uncompiled; then every server start compiles
                # sklearn, pandas and mlflow again when .pyc files cannot be written (read-only
                # env, PYTHONDONTWRITEBYTECODE), seconds of the health check each time.
                _run([uv, "pip", "install", "--compile-bytecode", "--python", str(path / "bin" / "python"),
                      *requirements], log_file, group_file)
            else:
                _run([python, "-m", "venv", str(path)], log_file, group_file)
                _run([str(path / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                      "--no-input", *requirements], log_file, group_file)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        marker.write_text(json.dumps({"installer": used, "requirements": list(requirements)}))
        return Environment(path, key, False, used, tuple(requirements))


def model_environment(
    *,
    home: Path,
    requirements: Sequence[str],
    python_version: str | None,
    overrides: Sequence[str] = (),
    python: str | None = None,
    installer: str = "auto",
    log: Callable[[str], None],
    log_file: Path,
    before_build: Callable[[str, list[str]], object] | None = None,
) -> Environment:
    """The environment to serve a model in: its requirements with the mlflow-skinny rule and
    the overrides applied, plus the scoring server's. Falls back to the full mlflow package
    when skinny cannot be installed. `before_build(key, requirements)` runs before each
    environment is looked up or built (the local target records it as a resource there)."""
    import scoring

    interpreter, warning = find_python(python_version, python or None)
    if warning:
        log(f"warning: {warning}")

    def ensure(wanted: list[str]) -> Environment:
        full = [*wanted, *scoring.SERVER_REQUIREMENTS]
        if before_build is not None:
            before_build(environment_key(interpreter, full), full)
        return ensure_environment(home=home, python=interpreter, requirements=full, installer=installer,
                                  log=log, log_file=log_file)

    skinny = apply_overrides(serving_requirements(requirements), overrides)
    try:
        return ensure(skinny)
    except PermanentTargetError:
        if not uses_skinny(requirements, serving_requirements(requirements)):
            raise
        log("mlflow-skinny could not be installed for this model; falling back to the full mlflow package")
        return ensure(apply_overrides(list(requirements), overrides))


_MISSING_PATTERNS = (
    re.compile(r"No matching distribution found for ([^\s]+)"),
    re.compile(r"Because ([A-Za-z0-9._-]+)(?:[<>=!~][^\s]*)? was not found in the package registry"),
    re.compile(r"No solution found when resolving dependencies:.*?\b([A-Za-z0-9._-]+)(?:[<>=!~]=?[^\s]*)? was not found",
               re.DOTALL),
)
_TRANSIENT_PATTERNS = re.compile(
    r"(Connection (reset|refused|aborted)|timed out|Temporary failure in name resolution|"
    r"HTTP status code: 5\d\d|Failed to download)", re.IGNORECASE)


def _die_with_parent() -> None:
    # Runs in the child before exec: a SIGKILLed runner takes its installer with it.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _run(command: list[str], log_file: Path, group_file: Path) -> None:
    """Run an installer in its own process group, recorded in `group_file` so a later build can
    stop one that outlived its runner before it removes the half-built environment."""
    with log_file.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=_die_with_parent if _LIBC else None)
        group_file.write_text(str(process.pid))
        try:
            returncode = process.wait()
        except BaseException:  # Ctrl-C or SIGTERM: stop the installer with us
            _kill_group(process.pid)
            process.wait()
            raise
        finally:
            group_file.unlink(missing_ok=True)
    if returncode == 0:
        return
    output = log_file.read_text()[-4000:]
    tail = "\n".join(output.strip().splitlines()[-15:])
    for pattern in _MISSING_PATTERNS:
        match = pattern.search(output)
        if match:
            package = match.group(1)
            raise PermanentTargetError(
                f"could not install {package!r} for the model's environment:\n{tail}",
                hint=f"pin an installable version with --pip-requirements-override '{requirement_name(package)}==VERSION'"
                f" or fix requirements.txt (full log: {log_file})",
            )
    if _TRANSIENT_PATTERNS.search(output):
        raise RetryableTargetError(f"installing the model's requirements failed (network):\n{tail}")
    raise PermanentTargetError(f"installing the model's requirements failed:\n{tail}",
                               hint=f"full log: {log_file}")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_stale_installer(group_file: Path) -> None:
    """Kill an installer a dead runner left behind, and wait until its group is gone."""
    try:
        pgid = int(group_file.read_text())
    except (OSError, ValueError):
        return
    _kill_group(pgid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.05)
    group_file.unlink(missing_ok=True)


def install_server(home: Path) -> Path:
    """Copy the scoring package to a directory named by its content hash; returns the dir for PYTHONPATH."""
    import scoring

    source = Path(scoring.__file__).parent
    files = sorted(p for p in source.rglob("*.py"))
    sha = hashlib.sha256()
    for file in files:
        sha.update(file.relative_to(source).as_posix().encode() + b"\0" + file.read_bytes())
    destination = home / "servers" / sha.hexdigest()[:16]
    if not (destination / "scoring").is_dir():
        staging = destination.with_name(destination.name + f".{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging / "scoring", ignore=shutil.ignore_patterns("__pycache__"))
        try:
            staging.rename(destination)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return destination
