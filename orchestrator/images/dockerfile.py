"""The one Dockerfile template of the shared scoring container, and its build context.

Layers, least often changed first, so a new model version with the same requirements
rebuilds and pushes only the last one:

    base image  →  user + model requirements (a venv)  →  scoring server  →  model files

The template has two halves. `DEPENDENCIES` makes the venv. Normally uv installed the
requirements on the host for the image's platform (`host_install`): the tree is one layer on the
base and one `RUN` finishes it (interpreter links, byte code, the non-root user). `orchestrate
build` loads that tree as a ready-made layer (`layer_image`) instead of sending it
through `COPY`, which costs Docker two more copies of a few hundred MB. Otherwise a throwaway
stage installs the requirements from a wheelhouse and only the finished venv is copied into
the image. `APPLICATION` adds the server and the model. `orchestrate build` builds each half as
its own image (the first tagged by the requirements' hash, so a model-only change skips it,
wheel downloads and all); `orchestrate generate-dockerfile` writes both halves as one
Dockerfile. Only classic-builder instructions are used: no BuildKit needed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Bump when the template changes: it is part of every content tag.
TEMPLATE_VERSION = "5"

VENV = "/opt/orchestrate/venv"
SERVER_DIR = "/opt/orchestrate/server"
MODEL_DIR = "/opt/ml/model"
USER_NAME = "orchestrate"
USER_ID = 10001
PORT = 8080

# Files serving never reads: packages' test suites, data files for notebooks, man pages.
_STRIP = (
    f"find {VENV} -depth -type d -name tests -path '*/site-packages/*/*' -exec rm -rf {{}} + "
    f"; rm -rf {VENV}/share /root/.cache"
)

_FROM_BASE = """\
ARG BASE_IMAGE={base_image}
FROM ${{BASE_IMAGE}}{stage}
"""

# Byte code: compiling every installed module costs about a minute of build; compiling none
# costs seconds at every container start. So the modules a server imports to load this kind
# of model are imported once at build time, which writes their byte code and nothing else.
_WARM_IMPORTS = "{venv}/bin/python /tmp/orchestrate/build/warm_imports.py {warm_imports}"

# Installed on the host: `python3 -m venv` over the tree only adds the interpreter links and pyvenv.cfg.
_FINISH_HOST_VENV = """\
COPY build /tmp/orchestrate/build
# The requirements were installed on the host by uv for this platform; nothing runs an installer.
RUN {user_step}python3 -m venv --without-pip {venv} \\
 && {warm_imports} \\
 && rm -rf /tmp/orchestrate
"""

_INSTALL_STAGE = """\
COPY requirements.txt /tmp/orchestrate/requirements.txt
COPY wheelhouse /tmp/orchestrate/wheelhouse
COPY build /tmp/orchestrate/build
# {install_note}
RUN python3 -m venv --without-pip {venv} \\
 && {install} \\
 && {warm_imports} \\
 && {strip}

FROM ${{BASE_IMAGE}}
{user_step}COPY --from=requirements {venv} {venv}
"""

_ENVIRONMENT = """\
ENV PATH={venv}/bin:$PATH \\
    PYTHONPATH={server_dir} \\
    PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    ORCHESTRATE_HOST=0.0.0.0 \\
    ORCHESTRATE_MODEL_DIR={model_dir}
"""

# uv installs a wheelhouse several times faster than pip (parallel unpacking and compiling).
_UV_INSTALL = (
    'python3 -c "import sys, zipfile; w = zipfile.ZipFile(sys.argv[1]); '
    "n = [m for m in w.namelist() if m.endswith('/scripts/uv')][0]; "
    "open('/tmp/orchestrate/uv', 'wb').write(w.read(n))\" /tmp/orchestrate/wheelhouse/{wheel} \\\n"
    " && chmod +x /tmp/orchestrate/uv \\\n"
    " && /tmp/orchestrate/uv pip install --quiet --python {venv}/bin/python --no-cache \\\n"
    "      --offline --no-index --find-links /tmp/orchestrate/wheelhouse -r /tmp/orchestrate/requirements.txt"
)
_PIP_INSTALL = (
    "{pip_env}{venv}/bin/python /tmp/orchestrate/wheelhouse/{wheel}/pip install \\\n"
    "      --disable-pip-version-check --no-cache-dir --no-compile --no-warn-script-location {index_options} \\\n"
    "      --find-links /tmp/orchestrate/wheelhouse -r /tmp/orchestrate/requirements.txt"
)

_APPLICATION = """\
COPY server {server_dir}
COPY bin /usr/local/bin
COPY model {model_dir}
LABEL {labels}
{user_line}EXPOSE {port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["healthcheck"]
CMD ["serve"]
"""

SERVE_SCRIPT = """\
#!/bin/sh
# SageMaker's contract: the platform runs `docker run IMAGE serve`. Port: 8080, or PORT /
# SAGEMAKER_BIND_TO_PORT; other settings from ORCHESTRATE_* variables (docs/images.md).
exec python -m scoring serve "$@"
"""

WARM_IMPORTS_SCRIPT = """\
\"\"\"Import the given modules so their byte code is written; a module that fails is skipped.

Submodules some packages import only when serving (scikit-learn's DataFrame handling through
narwhals, joblib's) are compiled too: every package the imports touched is compiled whole when
it is small; the big ones (numpy, pandas, scipy, scikit-learn) only as far as imported.
\"\"\"
import compileall
import importlib
import os
import sys
import sysconfig

SMALL = 200  # .py files

for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:  # the model may not need it: serving will tell
        print(f"warm-up: skipped {name}: {type(exc).__name__}: {exc}")
site_packages = sysconfig.get_paths()["purelib"]
for name in sorted({module.partition(".")[0] for module in sys.modules}):
    for directory in getattr(sys.modules.get(name), "__path__", None) or ():
        if directory.startswith(site_packages):
            sources = sum(file.endswith(".py") for _root, _dirs, files in os.walk(directory) for file in files)
            if sources < SMALL:
                compileall.compile_dir(directory, quiet=2)
"""

HEALTHCHECK_SCRIPT = """\
#!/usr/bin/env python3
\"\"\"Docker HEALTHCHECK: exit 0 when the scoring server answers /ping.\"\"\"
import sys
import urllib.request

from scoring._config import load_config

config = load_config()
port = config.private_port or config.port
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError:
    sys.exit(1)
"""


@dataclass(frozen=True)
class Template:
    """What varies between images built from the template."""

    base_image: str
    installer_wheel: str  # file name of the uv (offline) or pip wheel in the wheelhouse; "" when installed on the host
    offline: bool = True  # install with --no-index (a complete wheelhouse)
    user: str = USER_NAME  # "root" for targets that need it
    warm_imports: tuple[str, ...] = ()  # modules imported at build time to write their byte code

    def dependencies(self) -> str:
        """The first half: base image to finished venv."""
        if not self.installer_wheel:
            return (
                _FROM_BASE.format(base_image=self.base_image, stage="")
                + f"COPY venv {VENV}\n"
                + self._finish_host_venv()
            )
        offline = self.offline
        note = (
            "Offline: every requirement is in the wheelhouse."
            if offline
            else "Some requirement has no wheel for this platform: install from the index (host pip config)."
        ) + " The installer runs from its wheel and never lands in the venv."
        if self.installer_wheel.startswith("uv-") and offline:
            install = _UV_INSTALL.format(wheel=self.installer_wheel, venv=VENV)
        else:
            install = _PIP_INSTALL.format(
                wheel=self.installer_wheel,
                venv=VENV,
                index_options="--no-index" if offline else "",
                pip_env=""
                if offline
                else "PIP_CONFIG_FILE=/tmp/orchestrate/build/pip.conf PIP_CERT=/tmp/orchestrate/build/ca.crt ",
            )
        stage = _INSTALL_STAGE.format(
            install_note=note,
            venv=VENV,
            install=install,
            strip=_STRIP,
            warm_imports=self._warm_imports(),
            user_step=self._user_step("RUN ", "\n"),
        )
        return _FROM_BASE.format(base_image=self.base_image, stage=" AS requirements") + stage + self._environment()

    def finish_loaded_venv(self, parent: str) -> str:
        """The first half's last steps, on an image whose top layer is the host-installed venv."""
        return f"FROM {parent}\n" + self._finish_host_venv()

    def _finish_host_venv(self) -> str:
        return (
            _FINISH_HOST_VENV.format(
                user_step=self._user_step("", " \\\n && "), venv=VENV, warm_imports=self._warm_imports()
            )
            + self._environment()
        )

    def _user_step(self, before: str, after: str) -> str:
        if self.user == "root":
            return ""
        return (
            f"{before}useradd --system --uid {USER_ID} --user-group --no-create-home --home-dir /nonexistent "
            f"--shell /usr/sbin/nologin {USER_NAME}{after}"
        )

    def _warm_imports(self) -> str:
        return _WARM_IMPORTS.format(venv=VENV, warm_imports=" ".join(self.warm_imports))

    @staticmethod
    def _environment() -> str:
        return _ENVIRONMENT.format(venv=VENV, server_dir=SERVER_DIR, model_dir=MODEL_DIR)

    def application(self, labels: Mapping[str, str], *, parent: str | None) -> str:
        head = f"FROM {parent}\n" if parent else ""
        label_text = " \\\n      ".join(f"{key}={json.dumps(value)}" for key, value in sorted(labels.items()))
        return head + _APPLICATION.format(
            server_dir=SERVER_DIR,
            model_dir=MODEL_DIR,
            labels=label_text,
            port=PORT,
            user_line="" if self.user == "root" else f"USER {USER_ID}:{USER_ID}\n",
        )

    def single(self, labels: Mapping[str, str]) -> str:
        """Both halves as one Dockerfile (`orchestrate generate-dockerfile`)."""
        return (
            "# Generated by `orchestrate generate-dockerfile`. Build it from this directory:\n"
            "#   docker build -t IMAGE .\n" + self.dependencies() + "\n" + self.application(labels, parent=None)
        )


def write_server_files(context: Path, server_source: Path) -> None:
    """The scoring package (without byte code) and the `serve` and `healthcheck` scripts."""
    shutil.copytree(
        server_source,
        context / "server" / "scoring",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        dirs_exist_ok=True,
    )
    bin_dir = context / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("serve", SERVE_SCRIPT), ("healthcheck", HEALTHCHECK_SCRIPT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def write_model_files(context: Path, model_dir: Path) -> None:
    """The model's files (exactly those its digest covers) as plain files under `context/model`.

    `mlmodel.model_files` refuses a link leading out of the model, so no file of the host ever
    enters the image; a link inside it is copied as the file it names. Readable by all: the
    image's non-root user must read every file."""
    from ..model import mlmodel

    destination = context / "model"
    files = mlmodel.model_files(model_dir)
    directories = {
        destination.joinpath(*parent.parts) for file in files for parent in PurePosixPath(file.relative).parents
    }
    for directory in sorted(directories, key=lambda path: len(path.parts)):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
    for file in files:
        target = destination.joinpath(*file.relative.split("/"))
        target.unlink(missing_ok=True)  # never write through a link left in the context
        shutil.copyfile(file.source, target)
        target.chmod(0o644)
