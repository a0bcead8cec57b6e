"""Host installs: a model's requirements installed on the host, by uv, for an image's platform.

uv resolves and installs the requirements into a venv-shaped prefix (`lib/pythonX.Y/site-packages`,
`bin/`) for the image's CPython version, CPU and glibc (`--python-platform`, wheels only), and
the image build copies that tree in: no installer runs inside the build and nothing is fetched
there. When uv is missing or cannot install some requirement as a wheel for the platform, the
caller falls back to the pip wheelhouse (`wheelhouse.download`).

uv does not read pip's configuration, so the host's effective pip settings (`pip config list`:
the config files, then `PIP_*` variables) are translated into uv options; `UV_*` variables the
user set win over them. Proxy variables reach uv through the environment unchanged.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..model.environments import find_uv
from ..model.requirements import mask
from .wheelhouse import Platform

# The manylinux levels uv's --python-platform names (besides manylinux2014 = 2_17).
_UV_GLIBC_MINORS = (17, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40)
_UV_MACHINES = ("x86_64", "aarch64")


def uv_platform(platform: Platform) -> str | None:
    """uv's `--python-platform` for the image: the newest manylinux level its glibc accepts, or
    None when uv names no such platform (then the pip wheelhouse is used)."""
    major, minor = (int(part) for part in platform.glibc.split(".")[:2])
    usable = [m for m in _UV_GLIBC_MINORS if major == 2 and m <= minor]
    if platform.machine not in _UV_MACHINES or not usable:
        return None
    return f"{platform.machine}-manylinux_2_{usable[-1]}"


@dataclass(frozen=True)
class UvSettings:
    """The host's pip settings as uv command-line options and environment variables."""

    options: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)


# pip option → (uv option, the UV_* variables that, when set, mean the user chose for uv already)
_LIST_OPTIONS = {
    "index-url": ("--index-url", ("UV_INDEX_URL", "UV_DEFAULT_INDEX")),
    "extra-index-url": ("--extra-index-url", ("UV_EXTRA_INDEX_URL", "UV_INDEX")),
    "find-links": ("--find-links", ("UV_FIND_LINKS",)),
    "constraint": ("--constraint", ("UV_CONSTRAINT",)),
    "trusted-host": ("--allow-insecure-host", ("UV_INSECURE_HOST",)),
    "keyring-provider": ("--keyring-provider", ("UV_KEYRING_PROVIDER",)),
}
# pip option → environment variable uv reads (only when the user has not set it)
_ENV_OPTIONS = {
    "cert": "SSL_CERT_FILE",
    "client-cert": "SSL_CLIENT_CERT",
    "timeout": "UV_HTTP_TIMEOUT",
    "default-timeout": "UV_HTTP_TIMEOUT",
    "proxy": "HTTPS_PROXY",
}
_TRUE = ("1", "true", "yes", "on")


def pip_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The host pip's effective settings for a download: files' `global` then `download`
    sections, then `PIP_*` variables (pip's own precedence), as {option: value}."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
        check=False,
    )
    ranks = {"global": 0, "download": 1, ":env:": 2}
    found: dict[str, tuple[int, str]] = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        section, _dot, option = name.rpartition(".")
        if not sep or section not in ranks:
            continue
        rank = ranks[section]
        if option not in found or found[option][0] <= rank:
            found[option] = (rank, _unquote(value))
    return {option: value for option, (_rank, value) in found.items()}


def _unquote(value: str) -> str:
    try:
        return " ".join(shlex.split(value))
    except ValueError:
        return value.strip("'\"")


def uv_settings(pip: dict[str, str], environ: dict[str, str]) -> UvSettings:
    """Translate pip settings into uv's: indexes, find-links, constraints, trusted hosts,
    keyring, no-index, CA bundle, client certificate, timeout, proxy."""
    options: list[str] = []
    for key, (flag, uv_variables) in _LIST_OPTIONS.items():
        if key in pip and not any(environ.get(v) for v in uv_variables):
            for value in pip[key].split():
                options += [flag, value]
    if pip.get("no-index", "").lower() in _TRUE and not environ.get("UV_NO_INDEX"):
        options.append("--no-index")
    environment = {
        variable: pip[key]
        for key, variable in _ENV_OPTIONS.items()
        if pip.get(key) and not environ.get(variable) and not environ.get(variable.lower())
    }
    if "proxy" in pip and not environ.get("HTTP_PROXY") and not environ.get("http_proxy"):
        environment["HTTP_PROXY"] = pip["proxy"]
    # pip takes the best version across all indexes; uv's default stops at the first index that
    # has the package at all. Same answer as pip download, unless the user chose for uv.
    if not environ.get("UV_INDEX_STRATEGY"):
        options += ["--index-strategy", "unsafe-best-match"]
    return UvSettings(tuple(options), environment)


@dataclass(frozen=True)
class HostInstall:
    prefix: Path  # venv-shaped: lib/pythonX.Y/site-packages, bin/
    ok: bool
    reason: str = ""  # why not, when not ok


def install(
    requirements: Sequence[str],
    platform: Platform,
    prefix: Path,
    *,
    venv: str,
    log_file: Path,
    log: Callable[[str], None],
) -> HostInstall:
    """Install `requirements` into `prefix` for `platform` with uv, ready to be copied to `venv`
    in the image (scripts' `#!` lines point at `venv`). Returns ok=False (with uv's reason)
    when uv is not there or cannot do it; the caller then uses the pip wheelhouse."""
    uv = find_uv()
    target = uv_platform(platform)
    if uv is None or target is None:
        return HostInstall(
            prefix,
            False,
            "uv is not installed"
            if uv is None
            else f"uv has no platform for {platform.machine} with glibc {platform.glibc}",
        )
    environ = dict(os.environ)
    settings = uv_settings(pip_settings(environ), environ)
    # uv reads the lines from a file (option lines parsed as uv parses them; no credential on
    # the command line), readable by this user only.
    requirements_file = prefix.parent / f"{prefix.name}-requirements.txt"
    with os.fdopen(os.open(requirements_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as listing:
        listing.write("\n".join(requirements) + "\n")
    command = [
        uv,
        "pip",
        "install",
        "--quiet",
        "--no-progress",
        "--prefix",
        str(prefix),
        "--python-platform",
        target,
        "--python-version",
        platform.python,
        "--only-binary",
        ":all:",
        *settings.options,
        "-r",
        str(requirements_file),
    ]
    log(f"installing the requirements on the host with uv for CPython {platform.python} on {target}")
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**environ, **settings.environment},
        check=False,
    )
    requirements_file.unlink()
    stderr = mask(result.stderr)  # uv may quote an index URL with its credentials
    with log_file.open("a") as handle:
        handle.write(
            mask("$ " + shlex.join(command) + "\n" + "".join(f"  ({k}={v})\n" for k, v in settings.environment.items()))
            + mask(result.stdout)
            + stderr
        )
    if result.returncode != 0:
        shutil.rmtree(prefix, ignore_errors=True)
        lines = [line.strip(" ╰─▶│") for line in stderr.splitlines() if line.strip(" ╰─▶│")]
        reason = " ".join(lines[:3]) or "no output"
        return HostInstall(prefix, False, reason)
    _point_scripts_at(prefix / "bin", f"{venv}/bin/python")
    _strip(prefix)
    return HostInstall(prefix, True)


def _point_scripts_at(bin_dir: Path, python: str) -> None:
    # uv wrote the host interpreter into each script's #! line; the image has its own.
    for script in bin_dir.iterdir() if bin_dir.is_dir() else ():
        data = script.read_bytes()
        first, newline, rest = data.partition(b"\n")
        if first.startswith(b"#!") and b"python" in first:
            script.unlink()  # a fresh file: it may be a hard link into uv's cache
            script.write_bytes(b"#!" + python.encode() + newline + rest)
            script.chmod(0o755)


def _strip(prefix: Path) -> None:
    # What serving never reads (packages' test suites, man pages and notebook data), dropped
    # before the tree is sent to the engine.
    for site_packages in prefix.glob("lib/python*/site-packages"):
        for package in site_packages.iterdir():
            if package.is_dir():
                for tests in sorted(package.rglob("tests"), reverse=True):
                    if tests.is_dir():
                        shutil.rmtree(tests)
    shutil.rmtree(prefix / "share", ignore_errors=True)
