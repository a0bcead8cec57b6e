"""A model's pip requirements: read, checked against the install policy, and turned into the
set its serving environment installs.

`serving_requirements` is the one rule every target applies (local virtualenvs, `serve` and
`predict MODEL`, every image): `mlflow==X` is served with `mlflow-skinny==X` plus what
`mlflow.pyfunc` imports at serve time and skinny does not depend on (numpy and pandas), at the
versions full `mlflow==X` itself allows (its own `Requires-Dist`), merged with the model's pins.
When those cannot be read (no index, an mlflow with extras), the full package is used and the
notes say so.

Requirement lines that pick the package index (`-i`, `--index-url`, `--extra-index-url`,
`--find-links`, `--no-index`, `--trusted-host`) or install something other than a named
package from the index (a local path, `pkg @ file://…`, `git+…` and other URLs, `-e`) are
refused unless the deployment opts in (`allow_index_options`, `allow_direct_references`):
a model directory must not point the installer at a host of its choosing, nor run a local
`setup.py` on the host. Allowed lines reach the installer inside a requirements file (`-r`),
which it parses itself. Credentials in URLs (`https://user:PW@host/…`) are masked in every
line this module hands out; only `reveal` (at install time, from the model's own file) puts
them back, so the store, events, logs and argv only ever see the masked form.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from .. import secret_values
from ..errors import ConfigError
from ..secret_values import REDACTED
from .reads import load_model_yaml, read_model_text

#: What `mlflow.pyfunc` imports unconditionally that mlflow-skinny does not install.
PYFUNC_RUNTIME = ("numpy", "pandas")

# Config keys (every target's, see config.ENGINE_KEYS) that allow what is refused by default.
ALLOW_INDEX_OPTIONS = "allow_index_options"
ALLOW_DIRECT_REFERENCES = "allow_direct_references"

_INDEX_OPTIONS = (
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--no-index",
    "--trusted-host",
    "--pre",
    "--prefer-binary",
    "--only-binary",
    "--no-binary",
)
# Only these options choose where packages come from; the others above only how they are picked.
_INDEX_CHOOSING = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index", "--trusted-host")
# A user-info without a password (`https://TOKEN@host`): how VCS and index tokens are often given.
_TOKEN_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<token>[^/@\s:]+)@")


def mask(text: str) -> str:
    """`text` with every credential in it masked: the project's rule (`secret_values.mask_credentials`:
    URL passwords, tokens), and a URL user-info that is a token (`https://TOKEN@host`)."""
    return _TOKEN_USERINFO.sub(rf"\g<scheme>{REDACTED}@", secret_values.mask_credentials(text))


def requirement_name(requirement: str) -> str:
    """The canonical project name of a requirement line (`Foo_Bar>=1` → `foo-bar`)."""
    try:
        return str(canonicalize_name(Requirement(requirement).name))
    except InvalidRequirement:  # a path or URL names no project: it matches only itself
        return requirement.strip()


# -- reading -------------------------------------------------------------------------------------


def read_model_requirements(model_dir: Path) -> tuple[str, ...]:
    """The model's requirement lines, credentials masked: `requirements.txt`, else the `pip:`
    section of `conda.yaml` (what older MLflow wrote). Comments, blanks and line continuations
    are resolved; the policy is checked separately (`check_policy`), with the deployment's config.

    Raises ConfigError naming the file and line for what pip could not install either, for
    conda-only dependencies and for a model with neither file."""
    return tuple(mask(line) for line in _raw_lines(model_dir))


def reveal(lines: Sequence[str], model_dir: Path | None, overrides: Sequence[str] = ()) -> list[str]:
    """`lines` with masked credentials put back from the model's own requirements and the
    deployment's overrides (for the installer's requirements file only: never log or record
    the result)."""
    if not any(REDACTED in line for line in lines):
        return list(lines)
    try:
        sources = [*(_raw_lines(model_dir) if model_dir is not None else []), *overrides]
    except ConfigError:
        sources = list(overrides)
    real = {mask(line): line for line in sources}
    return [real.get(line, line) for line in lines]


def _raw_lines(model_dir: Path) -> list[str]:
    requirements_file = model_dir / "requirements.txt"
    if requirements_file.is_file():
        return _requirements_lines(requirements_file)
    conda_file = model_dir / "conda.yaml"
    if conda_file.is_file():
        return _conda_pip_lines(conda_file)
    raise ConfigError(
        f"{model_dir} has no requirements.txt (nor conda.yaml)",
        hint="save the model with mlflow (it writes requirements.txt) or add one listing its packages",
    )


def _requirements_lines(requirements_file: Path) -> list[str]:
    lines: list[str] = []
    pending = ""
    for number, raw in enumerate(read_model_text(requirements_file).splitlines(), 1):
        text = pending + raw
        if text.endswith("\\"):  # pip's line continuation
            pending = text[:-1]
            continue
        pending = ""
        line = re.split(r"(^|\s)#", text, maxsplit=1)[0].strip()
        if not line:
            continue
        _check_line(line, f"{requirements_file}:{number}")
        lines.append(line)
    return lines


def _conda_pip_lines(conda_file: Path) -> list[str]:
    document = load_model_yaml(conda_file)
    dependencies = document.get("dependencies") if isinstance(document, dict) else None
    if not isinstance(dependencies, list):
        raise ConfigError(f"{conda_file} has no dependencies list", hint="add a requirements.txt to the model")
    lines: list[str] = []
    conda_only: list[str] = []
    for dependency in dependencies:
        if isinstance(dependency, dict) and isinstance(dependency.get("pip"), list):
            for entry in dependency["pip"]:
                line = str(entry).strip()
                if line and not line.startswith("#"):
                    _check_line(line, f"{conda_file} (pip section)")
                    lines.append(line)
        elif isinstance(dependency, str):
            name = re.split(r"[=<>!~ ]", dependency.strip(), maxsplit=1)[0].split("::")[-1]
            if name not in ("python", "pip", "setuptools", "wheel"):
                conda_only.append(dependency.strip())
        else:
            raise ConfigError(f"{conda_file}: dependency {dependency!r} is neither a package nor a pip section")
    if conda_only:
        raise ConfigError(
            f"{conda_file} lists conda packages, which orchestrate cannot install (it builds pip "
            f"virtualenvs): {', '.join(conda_only)}",
            hint="list the pip equivalents in the model's requirements.txt (or the pip: section of conda.yaml)",
        )
    return lines


def _check_line(line: str, where: str) -> None:
    """What pip could not install either is refused here, when the model is read."""
    if line.startswith("-"):
        option = re.split(r"[\s=]", line, maxsplit=1)[0]
        if option not in (*_INDEX_OPTIONS, "-e", "--editable"):
            raise ConfigError(
                f"{where}: pip option {option!r} is not supported in a model's requirements",
                hint="list packages one per line (name==version)",
            )
        return
    if _is_direct_reference(line):
        return
    try:
        Requirement(line)
    except InvalidRequirement as exc:
        raise ConfigError(
            f"{where}: {mask(line)!r} is not a valid requirement ({exc})",
            hint="write name, name==version or name>=1,<2 (PEP 508)",
        ) from None


def _is_direct_reference(line: str) -> bool:
    """A local path, an archive or VCS URL, or `name @ URL`: anything not from the index."""
    if line.startswith(("-e", "--editable")):
        return True
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", line) or line.startswith(("git+", "hg+", "svn+", "bzr+")):
        return True
    if line.startswith((".", "/", "~")) or re.search(r"\.(whl|tar\.gz|zip|tar\.bz2|tgz)$", line.split(";")[0].strip()):
        return True
    try:
        return Requirement(line).url is not None
    except InvalidRequirement:
        return False


# -- policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """What a deployment lets its model's requirements do beyond naming index packages."""

    index_options: bool = False
    direct_references: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Policy:
        return cls(bool(config.get(ALLOW_INDEX_OPTIONS)), bool(config.get(ALLOW_DIRECT_REFERENCES)))


def check_policy(
    lines: Sequence[str],
    policy: Policy,
    *,
    where: str = "the model's requirements",
    how_to_allow: str = "-C {key}=true",
) -> None:
    """Raise ConfigError for the first line the policy refuses, with the reason and the opt-in
    (`how_to_allow` names it with {key}, the config key, or {flag}, the command-line flag)."""
    for line in lines:
        if line.startswith("-") and not line.startswith(("-e", "--editable")):
            option = re.split(r"[\s=]", line, maxsplit=1)[0]
            if option in _INDEX_CHOOSING and not policy.index_options:
                raise ConfigError(
                    f"{where}: {line!r} chooses where packages are downloaded from; a model may not pick "
                    "the package index of the machine that builds it",
                    hint="remove the line and configure the index on the host (pip.conf, UV_INDEX_URL), or, if "
                    f"you trust this model, allow it with {_opt_in(how_to_allow, ALLOW_INDEX_OPTIONS)}",
                )
        elif _is_direct_reference(line) and not policy.direct_references:
            raise ConfigError(
                f"{where}: {line!r} installs from a local path or URL rather than the package index; "
                "building it can run its setup code on this machine",
                hint="publish the package to your index and require it by name==version, or, if you trust this "
                f"model, allow it with {_opt_in(how_to_allow, ALLOW_DIRECT_REFERENCES)}",
            )


def _opt_in(how_to_allow: str, key: str) -> str:
    return how_to_allow.format(key=key, flag="--" + key.replace("_", "-"))


# -- overrides -----------------------------------------------------------------------------------


def parse_overrides(text: str | None) -> list[str]:
    """`--pip-requirements-override 'numpy>=1.2,<2, pandas[excel,plot]'` → ["numpy>=1.2,<2",
    "pandas[excel,plot]"]: a comma also separates version clauses and extras, so a piece
    continues the requirement before it when it is no requirement alone and the two together
    are one (or the one before is not yet whole), as `packaging` reads them."""
    parts: list[str] = []
    for piece in (text or "").split(","):
        piece = piece.strip()
        if not piece:
            continue
        if parts and not _parses(piece) and (_parses(f"{parts[-1]},{piece}") or not _parses(parts[-1])):
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    for part in parts:
        _check_line(part, "--pip-requirements-override")
    return parts


def _parses(text: str) -> bool:
    try:
        Requirement(text)
    except InvalidRequirement:
        return False
    return True


def apply_overrides(requirements: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """Replace requirements by project name, or add them (`--pip-requirements-override`)."""
    replaced = {requirement_name(o) for o in overrides if not o.startswith("-")}
    kept = [r for r in requirements if r.startswith("-") or requirement_name(r) not in replaced]
    return kept + list(overrides)


# -- the serving set -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServingRequirements:
    """What an environment for the model installs, credentials masked (see `reveal`)."""

    requirements: tuple[str, ...]
    fallback: tuple[str, ...] | None  # with the full mlflow package, if `requirements` cannot install
    notes: tuple[str, ...]  # for the build log: what the mlflow rule did and why

    def __post_init__(self) -> None:
        # Overrides may carry a credential the model's lines (masked when read) did not.
        object.__setattr__(self, "requirements", tuple(map(mask, self.requirements)))
        if self.fallback is not None:
            object.__setattr__(self, "fallback", tuple(map(mask, self.fallback)))

    @property
    def uses_skinny(self) -> bool:
        return self.fallback is not None


Lookup = Callable[[str], "list[str] | None"]


def serving_requirements(
    model_requirements: Sequence[str],
    overrides: Sequence[str] = (),
    *,
    server_requirements: Sequence[str] = (),
    cache_dir: Path | None = None,
    mlflow_requires: Lookup | None = None,
) -> ServingRequirements:
    """The one rule for what a model's environment installs (see the module docstring): the
    model's requirements served, then the overrides (they win), then the scoring server's.

    `mlflow_requires(spec)` gives full mlflow's `Requires-Dist` for a requirement like
    `mlflow==3.1.0` (default: `mlflow_dependencies`, cached under `cache_dir`)."""
    lookup = mlflow_requires or (lambda spec: mlflow_dependencies(spec, cache_dir))
    full = _merged([*apply_overrides(model_requirements, overrides), *server_requirements])
    index = next((i for i, line in enumerate(model_requirements) if _names_mlflow(line)), None)
    if index is None:
        return ServingRequirements(tuple(full), None, ())
    pin = Requirement(model_requirements[index])
    if pin.extras:
        return ServingRequirements(
            tuple(full),
            None,
            (f"{model_requirements[index]} asks for mlflow's extras; serving with the full mlflow package",),
        )
    requires = lookup(f"mlflow{pin.specifier}")
    if requires is None:
        note = (
            f"could not read which numpy and pandas {model_requirements[index]} needs from the package index; "
            "serving with the full mlflow package"
        )
        return ServingRequirements(tuple(full), None, (note,))
    skinny = Requirement(str(pin))
    skinny.name = "mlflow-skinny"
    added: list[str] = []
    for dependency in requires:
        wanted = Requirement(dependency)
        if canonicalize_name(wanted.name) in PYFUNC_RUNTIME and (wanted.marker is None or wanted.marker.evaluate()):
            wanted.marker = None
            added.append(str(wanted))
    served = [*model_requirements[:index], str(skinny), *model_requirements[index + 1 :], *added]
    skinny_set = _merged([*apply_overrides(served, overrides), *server_requirements])
    note = (
        f"serving {model_requirements[index]} with {skinny} and what mlflow.pyfunc imports from full mlflow's "
        f"dependencies ({', '.join(added) or 'none'})"
    )
    return ServingRequirements(tuple(skinny_set), tuple(full), (note,))


def with_full_mlflow(lines: Sequence[str]) -> tuple[str, ...] | None:
    """`lines` (a serving set) with `mlflow-skinny` replaced by the full `mlflow` of the same
    specifier, or None when they do not use skinny."""
    for index, line in enumerate(lines):
        if not line.startswith("-") and not _is_direct_reference(line) and requirement_name(line) == "mlflow-skinny":
            full = Requirement(line)
            full.name = "mlflow"
            return (*lines[:index], str(full), *lines[index + 1 :])
    return None


def _names_mlflow(line: str) -> bool:
    if line.startswith("-") or _is_direct_reference(line):
        return False
    return requirement_name(line) == "mlflow"


def _merged(lines: Sequence[str]) -> list[str]:
    """One line per project: specifiers of lines naming the same project (and marker) are
    intersected, so `numpy==1.26.4` and mlflow's `numpy<3` become `numpy<3,==1.26.4`."""
    result: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for line in lines:
        if line.startswith("-") or _is_direct_reference(line):
            result.append(line)
            continue
        requirement = Requirement(line)
        key = (str(canonicalize_name(requirement.name)), str(requirement.marker or ""))
        if key not in seen:
            seen[key] = len(result)
            result.append(line)
            continue
        earlier = Requirement(result[seen[key]])
        earlier.specifier = SpecifierSet(str(earlier.specifier & requirement.specifier))
        earlier.extras |= requirement.extras
        result[seen[key]] = str(earlier)
    return result


def mlflow_dependencies(spec: str, cache_dir: Path | None) -> list[str] | None:
    """Full mlflow's `Requires-Dist` for the newest release matching `spec` (`mlflow==3.1.0`):
    from the installed mlflow when it matches an exact pin, else from the package index's
    metadata (`pip install --dry-run --report`, nothing installed), cached per exact version.
    None when the index cannot say."""
    requirement = Requirement(spec)
    exact = _exact_version(requirement.specifier)
    if exact is not None:
        try:
            if metadata.version("mlflow") == exact:
                return list(metadata.requires("mlflow") or [])
        except metadata.PackageNotFoundError:
            pass
        cached = cache_dir / f"mlflow-{exact}.json" if cache_dir is not None else None
        if cached is not None and cached.is_file():
            try:
                return list(json.loads(cached.read_text()))
            except ValueError:
                cached.unlink(missing_ok=True)
    found = _index_requires(str(requirement))
    if found is not None and exact is not None and cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = cache_dir / f".mlflow-{exact}.json.tmp"
        staging.write_text(json.dumps(found))
        staging.replace(cache_dir / f"mlflow-{exact}.json")
    return found


def _exact_version(specifier: SpecifierSet) -> str | None:
    clauses = list(specifier)
    if len(clauses) == 1 and clauses[0].operator in ("==", "===") and "*" not in clauses[0].version:
        return clauses[0].version
    return None


def _index_requires(spec: str) -> list[str] | None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="orchestrate-mlflow-metadata-") as tmp:
        report = Path(tmp) / "report.json"
        try:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--dry-run",
                    "--no-deps",
                    "--ignore-installed",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    "--report",
                    str(report),
                    spec,
                ],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode != 0 or not report.is_file():
            return None
        try:
            installs = json.loads(report.read_text()).get("install") or []
            return [str(d) for d in installs[0]["metadata"].get("requires_dist") or []]
        except (ValueError, KeyError, IndexError, AttributeError):
            return None
