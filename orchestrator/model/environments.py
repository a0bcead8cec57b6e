"""Model environments: virtualenvs built from a model's requirements, cached by their hash."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PermanentTargetError, RetryableTargetError
from . import requirements as model_requirements
from .requirements import apply_overrides, parse_overrides, requirement_name

__all__ = [
    "Environment",
    "apply_overrides",
    "ensure_environment",
    "find_python",
    "model_environment",
    "parse_overrides",
    "requirement_name",
]


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
    """An interpreter for the model, and a warning when it is not the version the model asks for.

    Looked for, in order: this interpreter, pyenv's (`$PYENV_ROOT/versions/X.Y*`), `pythonX.Y`
    on PATH, uv's managed Pythons; each candidate is run to confirm its version (a pyenv shim
    on PATH may name a version it will not run)."""
    if override:
        if not shutil.which(override) and not Path(override).is_file():
            raise ConfigError(f"python interpreter {override!r} not found", hint="give a path or a name on PATH")
        return override, None
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    wanted = ".".join((version or current).split(".")[:2])
    if wanted == current:
        return sys.executable, None
    for candidate in _interpreter_candidates(wanted, version or wanted):
        if _reports_version(candidate, wanted):
            return candidate, None
    return sys.executable, (
        f"the model was saved with Python {version}; no Python {wanted} found (pyenv, python{wanted} on PATH, "
        f"uv), using Python {current} (set -C python=/path/to/python{wanted} to choose)"
    )


def _interpreter_candidates(wanted: str, exact: str) -> Iterable[str]:
    pyenv_versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = sorted(pyenv_versions.glob(f"{wanted}.*"), key=lambda p: _version_key(p.name), reverse=True)
    # The exact patch release the model was saved with first, then the newest of that minor.
    for directory in sorted(installed, key=lambda p: p.name != exact):
        yield str(directory / "bin" / "python")
    on_path = shutil.which(f"python{wanted}")
    if on_path:
        yield on_path
    uv = find_uv()
    if uv:
        found = subprocess.run(
            [uv, "python", "find", "--managed-python", wanted],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=60,
        )
        if found.returncode == 0 and found.stdout.strip():
            yield found.stdout.strip()


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in text.split("."))


def _reports_version(python: str, wanted: str) -> bool:
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip() == wanted


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
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
    ).stdout.strip()
    document = json.dumps({"python": version, "requirements": sorted(requirements)})
    return hashlib.sha256(document.encode()).hexdigest()[:20]


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive flock on `lock_path`, removed when released (so no `*.lock` file outlives a
    build). A waiter that wakes holding a file already unlinked by its holder tries again."""
    while True:
        handle = open(lock_path, "a")  # noqa: SIM115 - closed below, after the unlink
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:
                    yield
                finally:
                    lock_path.unlink(missing_ok=True)
                return
        finally:
            handle.close()


def ensure_environment(
    *,
    home: Path,
    python: str,
    requirements: Sequence[str],
    installer: str = "auto",
    log: Callable[[str], None],
    log_file: Path,
    model_dir: Path | None = None,
    overrides: Sequence[str] = (),
    imports: Sequence[str] = (),
) -> Environment:
    """The virtualenv for these requirements: reused when built before, else built now.

    Built in place under a file lock; a marker written last tells a finished env from one a
    crash interrupted, which is removed and rebuilt. `requirements` are the masked lines
    (`requirements.reveal` restores credentials from `model_dir` and `overrides` for the
    installer only).
    `imports` must import in the env (`check_imports`), else the build fails and an env built
    now is removed, so it is never reused as good."""
    key = environment_key(python, requirements)
    root = envs_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    marker = path / ".orchestrate-env.json"
    with _exclusive(root / f"{key}.lock"):
        if marker.is_file():
            recorded = json.loads(marker.read_text())
            checked = set(recorded.get("checked_imports", ()))
            unchecked = [module for module in imports if module not in checked]
            if unchecked:
                check_imports(path / "bin" / "python", unchecked, model_dir=model_dir, log_file=log_file)
                recorded["checked_imports"] = sorted(checked | set(unchecked))
                marker.write_text(json.dumps(recorded))
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
        # The installer reads the lines from a file: option lines are parsed by it, and no
        # credential a requirement carries is ever on a command line.
        requirements_file = root / f"{key}.requirements.txt"
        try:
            descriptor = os.open(requirements_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                lines = model_requirements.reveal(requirements, model_dir, overrides)
                handle.write("\n".join(lines) + "\n")
            if uv:
                _run([uv, "venv", "--quiet", "--python", python, str(path)], log_file, group_file)
                # uv, unlike pip, leaves bytecode uncompiled; then every server start compiles
                # sklearn, pandas and mlflow again when .pyc files cannot be written (read-only
                # env, PYTHONDONTWRITEBYTECODE), seconds of the health check each time.
                _run(
                    [
                        uv,
                        "pip",
                        "install",
                        "--compile-bytecode",
                        "--python",
                        str(path / "bin" / "python"),
                        "-r",
                        str(requirements_file),
                    ],
                    log_file,
                    group_file,
                )
            else:
                _run([python, "-m", "venv", str(path)], log_file, group_file)
                _run(
                    [
                        str(path / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "-r",
                        str(requirements_file),
                    ],
                    log_file,
                    group_file,
                )
            check_imports(path / "bin" / "python", imports, model_dir=model_dir, log_file=log_file)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        finally:
            requirements_file.unlink(missing_ok=True)
        marker.write_text(
            json.dumps({"installer": used, "requirements": list(requirements), "checked_imports": sorted(set(imports))})
        )
        return Environment(path, key, False, used, tuple(requirements))


_IMPORT_CHECK = """\
import importlib, json, sys
failed = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        failed[name] = {"missing": (exc.name or name).split(".")[0], "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        failed[name] = {"missing": None, "error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(failed))
"""


def check_imports(python: Path | str, modules: Sequence[str], *, model_dir: Path | None, log_file: Path) -> None:
    """Import `modules` in the interpreter `python` (a built env, in a subprocess; the model's
    `code/` directory on its path, as when serving). Raises PermanentTargetError naming the
    first module that does not import, with the `--pip-requirements-override` fix."""

    if not modules:
        return
    code_paths = [str(p) for p in code_paths_of(model_dir)] if model_dir else []
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if model_dir:  # as the server sets them before loading the model (e.g. Keras' backend)
        environment = {**flavor_environment(model_dir), **environment}
    if code_paths:
        environment["PYTHONPATH"] = os.pathsep.join(code_paths)
    try:
        result = subprocess.run(
            import_check_command(str(python), modules),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=environment,
            cwd=str(model_dir or "/"),
            timeout=600,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PermanentTargetError(
            f"importing {', '.join(modules)} in the model's environment took over 600 s", hint=f"full log: {log_file}"
        ) from None
    raise_for_import_failures(result.stdout, result.stderr, "the model's environment", log_file)


def import_check_command(python: str, modules: Sequence[str]) -> list[str]:
    """The command that imports `modules` with `python` and prints a JSON map of failures."""
    return [python, "-c", _IMPORT_CHECK, *modules]


def raise_for_import_failures(stdout: str, stderr: str, where: str, log_file: Path) -> None:
    """Read the output of `import_check_command`; raise PermanentTargetError for a failure."""
    with log_file.open("a") as handle:
        handle.write(f"import check in {where}: {stdout.strip()}\n{stderr[-4000:]}")
    try:
        failed: dict[str, dict[str, str | None]] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise PermanentTargetError(
            f"the import check could not run in {where}: {stderr.strip()[-500:]}", hint=f"full log: {log_file}"
        ) from None
    if not failed:
        return
    missing = list(dict.fromkeys(str(f["missing"]) for f in failed.values() if f["missing"]))
    if missing:
        needed_by = ", ".join(name for name, f in failed.items() if f["missing"])
        packages = ",".join(distribution_of(module) for module in missing)
        raise PermanentTargetError(
            f"{where} has no Python module {', '.join(repr(m) for m in missing)} (needed to import {needed_by})",
            hint=f"add it with --pip-requirements-override '{packages}' (-C pip_requirements_override='{packages}' "
            f"on deploy), then to the model's requirements.txt (full log: {log_file})",
        )
    name, failure = next(iter(failed.items()))
    raise PermanentTargetError(
        f"{name} does not import in {where}: {failure['error']}",
        hint=f"pin compatible versions with --pip-requirements-override 'pkg==VERSION' (full log: {log_file})",
    )


def distribution_of(module: str) -> str:
    """The pip project that usually provides the top-level module `module`."""
    from scoring._model import _DISTRIBUTIONS  # the server's own table, for the same hint

    return _DISTRIBUTIONS.get(module, module.replace("_", "-"))


def code_paths_of(model_dir: Path) -> list[Path]:
    """The model's `code/` directory (MLmodel's python_function `code`), which serving puts on sys.path."""
    conf = _pyfunc_conf(model_dir)
    code = conf.get("code") if conf else None
    return [model_dir / str(code)] if code else []


def flavor_environment(model_dir: Path) -> dict[str, str]:
    """The variables the server sets before loading the model in `model_dir` (`scoring.flavor_environment`)."""
    import scoring

    return scoring.flavor_environment(_pyfunc_conf(model_dir).get("_flavors") or {})


def _pyfunc_conf(model_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        document = yaml.safe_load((model_dir / "MLmodel").read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    flavors = document.get("flavors") if isinstance(document, dict) else None
    conf = flavors.get("python_function") if isinstance(flavors, dict) else None
    return {**conf, "_flavors": flavors} if isinstance(conf, dict) else {}


def serving_imports(model_dir: Path, requirements: Sequence[str]) -> tuple[str, ...]:
    """What the scoring server imports to serve the model in an env of `requirements`: the
    server's own modules, and the loader the server will use (`scoring._model.load_model`):
    scikit-learn and the pickle format's module for mlflow.sklearn, else `mlflow.pyfunc` and
    the flavor's module when mlflow is installed, else the bare `loader_module`."""
    import scoring

    conf = _pyfunc_conf(model_dir)
    loader = str(conf.get("loader_module") or "")
    names = {model_requirements.requirement_name(r) for r in requirements if not r.startswith("-")}
    imports = [
        m
        for m in scoring.serving_imports(loader)
        if m not in ("skops.io", "cloudpickle", "sklearn", "mlflow.pyfunc", loader)
    ]
    if loader == "mlflow.sklearn":
        flavor = (conf.get("_flavors") or {}).get("sklearn") or {}
        fmt = flavor.get("serialization_format", "pickle")
        imports += ["sklearn", *{"skops": ["skops.io"], "cloudpickle": ["cloudpickle"]}.get(fmt, [])]
    elif names & {"mlflow", "mlflow-skinny"}:
        imports += ["mlflow.pyfunc", *([loader] if loader else [])]
        if loader == "mlflow.pyfunc.model":
            imports.append("cloudpickle")  # the python_model is a cloudpickle
    elif loader:
        imports.append(loader)
    return tuple(dict.fromkeys(imports))


def model_environment(
    *,
    home: Path,
    requirements: Sequence[str],
    python_version: str | None,
    model_dir: Path | None = None,
    overrides: Sequence[str] = (),
    python: str | None = None,
    installer: str = "auto",
    log: Callable[[str], None],
    log_file: Path,
    before_build: Callable[[str, list[str]], object] | None = None,
) -> Environment:
    """The environment to serve a model in: `requirements.serving_requirements` (the mlflow
    rule, the overrides, the scoring server's), built and import-checked against the model in
    `model_dir`. Falls back to the full mlflow package when the skinny set cannot be installed
    or does not import. `before_build(key, requirements)` runs before each environment is
    looked up or built (the local target records it as a resource there)."""
    import scoring

    interpreter, warning = find_python(python_version, python or None)
    if warning:
        log(f"warning: {warning}")
    plan = model_requirements.serving_requirements(
        requirements, overrides, server_requirements=scoring.SERVER_REQUIREMENTS, cache_dir=metadata_cache(home)
    )
    for note in plan.notes:
        log(note)

    def ensure(wanted: Sequence[str]) -> Environment:
        full = list(wanted)
        if before_build is not None:
            before_build(environment_key(interpreter, full), full)
        imports = serving_imports(model_dir, full) if model_dir is not None else ()
        return ensure_environment(
            home=home,
            python=interpreter,
            requirements=full,
            installer=installer,
            log=log,
            log_file=log_file,
            model_dir=model_dir,
            overrides=overrides,
            imports=imports,
        )

    try:
        return ensure(plan.requirements)
    except PermanentTargetError as exc:
        if plan.fallback is None:
            raise
        log(
            f"the mlflow-skinny environment did not work for this model ({exc.message.splitlines()[0]}); "
            "falling back to the full mlflow package"
        )
        return ensure(plan.fallback)


def metadata_cache(home: Path) -> Path:
    """Where package metadata read from the index is kept (immutable per release)."""
    return envs_dir(home) / ".metadata"


_MISSING_PATTERNS = (
    re.compile(r"No matching distribution found for ([^\s]+)"),
    re.compile(r"Because ([A-Za-z0-9._-]+)(?:[<>=!~][^\s]*)? was not found in the package registry"),
    re.compile(
        r"No solution found when resolving dependencies:.*?\b([A-Za-z0-9._-]+)(?:[<>=!~]=?[^\s]*)? was not found",
        re.DOTALL,
    ),
)
_TRANSIENT_PATTERNS = re.compile(
    r"(Connection (reset|refused|aborted)|timed out|Temporary failure in name resolution|"
    r"HTTP status code: 5\d\d|Failed to download)",
    re.IGNORECASE,
)


def _die_with_parent() -> None:
    # Runs in the child before exec: a SIGKILLed runner takes its installer with it.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _run(command: list[str], log_file: Path, group_file: Path) -> None:
    """Run an installer in its own process group, recorded in `group_file` so a later build can
    stop one that outlived its runner before it removes the half-built environment. Its output
    reaches the log with URL credentials masked."""
    with log_file.open("a") as handle:
        handle.write("$ " + model_requirements.mask(shlex.join(command)) + "\n")
        handle.flush()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            errors="replace",
            preexec_fn=_die_with_parent if _LIBC else None,  # noqa: PLW1509 - prctl only
        )
        group_file.write_text(str(process.pid))
        try:
            assert process.stdout is not None
            for line in process.stdout:
                handle.write(model_requirements.mask(line))
            returncode = process.wait()
        except BaseException:  # Ctrl-C or SIGTERM: stop the installer with us
            _kill_group(process.pid)
            process.wait()
            raise
        finally:
            if process.stdout is not None:
                process.stdout.close()
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
    raise PermanentTargetError(f"installing the model's requirements failed:\n{tail}", hint=f"full log: {log_file}")


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
