"""Wheelhouses: a model's dependencies downloaded on the host for an image's platform.

The fallback of `host_install` (uv installing the requirements on the host): used when uv is
missing, names no platform for the image, or cannot install some requirement as a wheel.

`pip download` runs on the host with the host's pip settings (index URLs, `find-links`,
proxy variables, `PIP_CERT` / custom CA), for the image's Python version, CPU and glibc, so the
image build installs with `--no-index` and needs no network. When some requirement has no
wheel for that platform, the wheelhouse is marked partial: the build then installs from the
index inside the build, with the host's pip configuration and CA bundle copied into the
build's throwaway stage (never into the image).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import PermanentTargetError, RetryableTargetError
from ..model.requirements import mask, requirement_name

_NO_MATCH = re.compile(r"No matching distribution found for ([^\s]+)")
_TRANSIENT = re.compile(
    r"(Connection (reset|refused|aborted)|timed out|Temporary failure in name resolution|"
    r"HTTP status code: 5\d\d|HTTPError: 5\d\d|ReadTimeoutError)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Platform:
    """What the image's interpreter accepts: CPython X.Y on a glibc Linux machine."""

    python: str  # "3.11"
    machine: str  # "x86_64", "aarch64"
    glibc: str  # "2.36"

    def pip_platforms(self) -> list[str]:
        """Every manylinux tag this glibc accepts, newest first (pip does not expand them itself)."""
        major, minor = (int(part) for part in self.glibc.split(".")[:2])
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.machine}" for glibc_minor, name in legacy.items() if minor >= glibc_minor]
        return tags


@dataclass(frozen=True)
class Wheelhouse:
    path: Path
    complete: bool  # False: some requirement must be installed from the index inside the build
    missing: tuple[str, ...]  # requirements without a wheel for the platform
    installed: bool = False  # path is a venv-shaped tree uv installed on the host (`host_install`), not wheels


def download(
    requirements: Sequence[str], platform: Platform, destination: Path, *, log: Callable[[str], None], log_file: Path
) -> Wheelhouse:
    """Download wheels for `requirements` and the installers (pip, uv) into `destination`.

    Raises PermanentTargetError naming the package when a requirement does not exist at all,
    RetryableTargetError when the index could not be reached."""
    destination.mkdir(parents=True, exist_ok=True)
    # uv installs faster than pip; without a uv wheel for the platform, pip does it.
    wanted = [*requirements, "pip", "uv"]
    result = _pip_download(wanted, platform, destination, log_file)
    missing = _NO_MATCH.search(result.stdout[-6000:])
    if result.returncode != 0 and missing and requirement_name(missing.group(1)) == "uv":
        wanted = wanted[:-1]
        result = _pip_download(wanted, platform, destination, log_file)
    if result.returncode == 0:
        return Wheelhouse(destination, True, ())
    output = result.stdout[-6000:]
    missing = _NO_MATCH.search(output)
    if missing is None:
        if _TRANSIENT.search(output):
            raise RetryableTargetError("downloading the model's requirements failed (network):\n" + _tail(output))
        raise PermanentTargetError(
            "downloading the model's requirements failed:\n" + _tail(output), hint=f"full log: {log_file}"
        )
    package = missing.group(1)
    if not _exists_anywhere(package, log_file):
        raise PermanentTargetError(
            f"could not install {package!r} for the image: no version of it can be found:\n{_tail(output)}",
            hint=f"pin an installable version with --pip-requirements-override "
            f"'{requirement_name(package)}==VERSION' or fix requirements.txt (full log: {log_file})",
        )
    log(
        f"no wheel of {package} for CPython {platform.python} on {platform.machine} (glibc {platform.glibc}); "
        "the build will install the requirements from the package index inside the build (needs network)"
    )
    # Download what does have wheels, so the build fetches as little as possible.
    others = [r for r in wanted if requirement_name(r) != requirement_name(package)]
    _pip_download(others, platform, destination, log_file, no_deps=True)
    return Wheelhouse(destination, False, (package,))


def _pip_download(
    requirements: Sequence[str], platform: Platform, destination: Path, log_file: Path, *, no_deps: bool = False
) -> subprocess.CompletedProcess[str]:
    # pip reads the lines from a file: option lines (--extra-index-url URL) are parsed as pip
    # parses them, and a credential in one is never on the command line.
    with tempfile.NamedTemporaryFile("w", prefix="requirements-", suffix=".txt", dir=destination.parent) as listing:
        listing.write("\n".join(requirements) + "\n")
        listing.flush()
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            platform.python,
            *(arg for tag in platform.pip_platforms() for arg in ("--platform", tag)),
            "-d",
            str(destination),
            *(["--no-deps"] if no_deps else []),
            "-r",
            listing.name,
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=_pip_environment(), check=False
        )
    output = mask(result.stdout + result.stderr)
    with log_file.open("a") as handle:
        handle.write("$ " + shlex.join(command) + "\n" + output)
    return subprocess.CompletedProcess(command, result.returncode, output, "")


def _exists_anywhere(requirement: str, log_file: Path) -> bool:
    """Whether the index has the requirement in any form (an sdist counts)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-input",
            "--no-deps",
            "--no-binary=:all:",
            "-d",
            str(log_file.parent / ".sdist-probe"),
            requirement,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_pip_environment(),
        check=False,
    )
    with log_file.open("a") as handle:
        handle.write(mask(result.stdout + result.stderr))
    return result.returncode == 0


def _pip_environment() -> dict[str, str]:
    # The host's own pip settings (PIP_*, proxies, CA variables) pass through untouched.
    return {**os.environ, "PIP_NO_INPUT": "1"}


def _tail(output: str, lines: int = 12) -> str:
    return "\n".join(line for line in output.strip().splitlines()[-lines:] if not line.startswith("WARNING: Location"))


def host_pip_files() -> dict[str, Path]:
    """The host's pip configuration and CA bundle, for an in-build install from the index."""
    found: dict[str, Path] = {}
    candidates = [
        os.environ.get("PIP_CONFIG_FILE"),
        "/etc/pip.conf",
        str(Path.home() / ".config" / "pip" / "pip.conf"),
        str(Path.home() / ".pip" / "pip.conf"),
    ]
    configs = [Path(c) for c in candidates if c and Path(c).is_file()]
    if configs:
        found["pip.conf"] = configs[-1]
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            found["ca.crt"] = Path(value)
            break
    else:
        if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
            found["ca.crt"] = Path("/etc/ssl/certs/ca-certificates.crt")
    return found
