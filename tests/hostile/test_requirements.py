"""Hostile and careless requirements (issue 11): a model's requirements.txt that picks the
package index or installs from a path or URL, credentials inside it, and what a failed build
leaves behind.

Everything is real: the `orchestrate` CLI as a subprocess, uv building virtualenvs, and a
password-protected PEP 503 package index served on 127.0.0.1 by the test (one tiny wheel).

| finding | what was wrong on 1407a72 | tests |
|---|---|---|
| S8 | a model's `-i URL` was honoured; local paths, `pkg @ file://…`, `git+https://…` were installed, a local `setup.py` ran on the host during `build` | test_unsafe_requirement_is_refused_before_anything_runs (10 kinds), test_opt_in_key_allows_it, test_commands_without_a_deployment_refuse_with_their_own_flag, test_the_flag_lets_predict_past_the_refusal |
| S4 | a credential in requirements.txt (`--extra-index-url http://user:PW@…`) was written to the store and the build log | test_credential_in_requirements_reaches_only_the_installer |
| B-argv | `--index-url URL` lines were passed to the installer as one argv token, so every such build failed | test_index_option_reaches_the_installer_as_pip_parses_it |
| K-lock | failed builds left `envs/*.lock` files | test_failed_build_leaves_no_lock_file, test_credential_in_requirements_reaches_only_the_installer |
| B-comma | `--pip-requirements-override` was split at every comma (`numpy>=1.2,<2`, `pandas[excel,plot]`), and a `git+https://…` line was taken for project `git` (regexes, not `packaging`) | test_override_commas_split_requirements_not_their_clauses, test_an_override_replaces_by_project_name_only |
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _executables import orchestrate_executable
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.errors import PermanentTargetError
from orchestrator.model import environments, requirements

USER, PASSWORD = "deployer", "Pw-4e1c9b7f2a"
PROBE = "orchestrate-requirements-probe"


@pytest.mark.parametrize(("given", "parsed"), [
    ("numpy>=1.2,<2", ["numpy>=1.2,<2"]),
    ("numpy>=1.2,<2, pandas==2.2.3,scikit-learn", ["numpy>=1.2,<2", "pandas==2.2.3", "scikit-learn"]),
    ("pandas[excel,plot]>=2,<3,numpy", ["pandas[excel,plot]>=2,<3", "numpy"]),
    ('numpy>=1.2,!=1.5.*,<2; python_version > "3.8",pandas', ['numpy>=1.2,!=1.5.*,<2; python_version > "3.8"', "pandas"]),
])
def test_override_commas_split_requirements_not_their_clauses(given: str, parsed: list[str]) -> None:
    assert requirements.parse_overrides(given) == parsed


def test_an_override_replaces_by_project_name_only() -> None:
    model = ["Pandas==1.5.3", "git+https://example.invalid/git.git", "./wheels/numpy-1.0-py3-none-any.whl"]
    assert requirements.apply_overrides(model, requirements.parse_overrides("pandas[excel,plot]>=2,git")) == [
        "git+https://example.invalid/git.git", "./wheels/numpy-1.0-py3-none-any.whl", "pandas[excel,plot]>=2", "git"]


def _orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([orchestrate_executable(), *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)


def _model(path: Path, requirements: str) -> Path:
    """Enough of an MLflow model for `deploy` (scikit-learn's loader, which needs scikit-learn)."""
    path.mkdir(parents=True)
    (path / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n"
                                  "    python_version: 3.11.7\n  sklearn:\n    pickled_model: model.pkl\n")
    (path / "requirements.txt").write_text(requirements)
    return path


def _deployments() -> list[object]:
    listed = _orchestrate("list", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


# -- a package index that wants a password ----------------------------------------------------


def _wheel(directory: Path) -> Path:
    """A pure-Python wheel of PROBE 0.1 (module orchestrate_requirements_probe)."""
    module = PROBE.replace("-", "_")
    files = {f"{module}/__init__.py": b"ANSWER = 42\n",
             f"{module}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 0.1\n".encode(),
             f"{module}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              b"Tag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + f"{module}-0.1.dist-info/RECORD,,\n"
    wheel = directory / f"{module}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{module}-0.1.dist-info/RECORD", record)
    return wheel


@dataclass
class Index:
    url: str  # http://127.0.0.1:PORT/simple/, without credentials
    authorized: list[str] = field(default_factory=list)  # paths asked for with the right password
    refused: list[str] = field(default_factory=list)

    def with_credentials(self) -> str:
        return self.url.replace("http://", f"http://{USER}:{PASSWORD}@")


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    wheel = _wheel(tmp_path_factory.mktemp("index"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    state = Index("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.answer(with_body=False)

        def do_GET(self) -> None:
            self.answer(with_body=True)

        def answer(self, *, with_body: bool) -> None:
            if self.headers.get("Authorization") != expected:
                state.refused.append(self.path)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.authorized.append(self.path)
            if self.path.rstrip("/") == f"/simple/{PROBE}":
                body, kind = (f'<a href="/files/{wheel.name}#sha256={digest}">{wheel.name}</a>'.encode(),
                              "text/html")
            elif self.path == f"/files/{wheel.name}":
                body, kind = wheel.read_bytes(), "application/octet-stream"
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- refused unless allowed (S8) ---------------------------------------------------------------


UNSAFE = {
    "-i": ("-i http://127.0.0.1:9/simple\nscikit-learn\n", "allow_index_options"),
    "--index-url": ("--index-url=http://127.0.0.1:9/simple\n", "allow_index_options"),
    "--extra-index-url": ("--extra-index-url http://127.0.0.1:9/simple\n", "allow_index_options"),
    "--find-links": ("--find-links /tmp\nscikit-learn\n", "allow_index_options"),
    "relative-path": ("./localpkg\n", "allow_direct_references"),
    "absolute-path": ("{localpkg}\n", "allow_direct_references"),
    "file-url": ("localpkg @ file://{localpkg}\n", "allow_direct_references"),
    "git": ("git+https://127.0.0.1:9/x/localpkg.git\n", "allow_direct_references"),
    "editable": ("-e {localpkg}\n", "allow_direct_references"),
    "archive-url": ("https://127.0.0.1:9/localpkg-1.0.tar.gz\n", "allow_direct_references"),
}


@pytest.fixture
def local_package(tmp_path: Path) -> tuple[Path, Path]:
    """A local package whose setup.py, if anything ran it, would leave a marker file."""
    package = tmp_path / "localpkg"
    package.mkdir()
    marker = tmp_path / "setup-py-ran"
    (package / "setup.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                      "from setuptools import setup\nsetup(name='localpkg', version='1.0')\n")
    return package, marker


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_requirement_is_refused_before_anything_runs(kind: str, tmp_path: Path,
                                                            local_package: tuple[Path, Path]) -> None:
    package, marker = local_package
    text, key = UNSAFE[kind]
    model = _model(tmp_path / "model", text.format(localpkg=package))
    result = CliRunner().invoke(cli, ["deploy", str(model), "--name", "careless"], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert key in result.stderr and "requirements" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert CliRunner().invoke(cli, ["list", "--json"], catch_exceptions=False).stdout.strip() in ("[]", "")
    assert not marker.exists()


def test_opt_in_key_allows_it(tmp_path: Path, local_package: tuple[Path, Path]) -> None:
    package, _marker = local_package
    model = _model(tmp_path / "model", f"-i http://127.0.0.1:9/simple\nlocalpkg @ file://{package}\n")
    refused = _orchestrate("deploy", str(model), "--name", "trusted", "-t", "noop", "-C", "allow_index_options=true")
    assert refused.returncode == 2 and "allow_direct_references" in refused.stderr, refused.stderr
    allowed = _orchestrate("deploy", str(model), "--name", "trusted", "-t", "noop", "-C", "allow_index_options=true",
                           "-C", "allow_direct_references=true")
    assert allowed.returncode == 0, allowed.stderr
    assert len(_deployments()) == 1


@pytest.mark.parametrize("command", [["serve"], ["predict", "-i", "{input}"], ["build", "-t", "team/careless"],
                                     ["generate-dockerfile", "-d", "{context}"]])
def test_commands_without_a_deployment_refuse_with_their_own_flag(command: list[str], tmp_path: Path) -> None:
    model = _model(tmp_path / "model", "-i http://127.0.0.1:9/simple\nscikit-learn\n")
    (tmp_path / "in.json").write_text('{"inputs": [[1]]}')
    argv = [command[0], str(model), *(part.format(input=tmp_path / "in.json", context=tmp_path / "ctx")
                                      for part in command[1:])]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "chooses where packages are downloaded from" in result.stderr
    assert "allow it with --allow-index-options" in result.stderr, result.stderr
    assert not (tmp_path / "ctx").exists()


def test_the_flag_lets_predict_past_the_refusal(tmp_path: Path, local_package: tuple[Path, Path]) -> None:
    package, marker = local_package
    model = _model(tmp_path / "model", f"-i http://127.0.0.1:9/simple\nlocalpkg @ file://{package}\n")
    (tmp_path / "in.json").write_text('{"inputs": [[1]]}')
    predict = ["predict", str(model), "-i", str(tmp_path / "in.json"), "--env-manager", "local"]
    refused = _orchestrate(*predict, "--allow-index-options")
    assert refused.returncode == 2 and "--allow-direct-references" in refused.stderr, refused.stderr
    # Both trusted: the policy passes and the model itself is tried (it has no model.pkl, so it fails
    # to load); with --env-manager local nothing is installed, so the package's setup.py never runs.
    allowed = _orchestrate(*predict, "--allow-index-options", "--allow-direct-references")
    assert "chooses where packages" not in allowed.stderr and "installs from a local path" not in allowed.stderr
    assert allowed.returncode == 1 and "model.pkl" in allowed.stderr, allowed.stderr
    assert not marker.exists()


# -- what reaches the installer -----------------------------------------------------------------


@pytest.mark.slow
def test_index_option_reaches_the_installer_as_pip_parses_it(index: Index, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_ENVS_DIR", str(tmp_path / "envs"))
    log_file = tmp_path / "build.log"
    built = environments.ensure_environment(
        home=tmp_path, python=sys.executable, log=lambda _line: None, log_file=log_file,
        requirements=[f"--index-url {index.with_credentials()}", f"{PROBE}==0.1"],
        imports=[PROBE.replace("-", "_")])
    answer = subprocess.run([str(built.python), "-c", f"import {PROBE.replace('-', '_')} as p; print(p.ANSWER)"],
                            capture_output=True, text=True, check=True).stdout
    assert answer.strip() == "42"
    assert any(path.startswith("/files/") for path in index.authorized)
    assert PASSWORD not in log_file.read_text()
    assert not list((tmp_path / "envs").glob("*.lock")) and not list((tmp_path / "envs").glob("*.txt"))


@pytest.mark.slow
def test_failed_build_leaves_no_lock_file(index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs = tmp_path / "envs"
    monkeypatch.setenv("ORCHESTRATE_ENVS_DIR", str(envs))
    with pytest.raises(PermanentTargetError):
        environments.ensure_environment(
            home=tmp_path, python=sys.executable, log=lambda _line: None, log_file=tmp_path / "build.log",
            requirements=[f"--index-url {index.with_credentials()}", "orchestrate-no-such-probe==0.1"])
    assert sorted(p.name for p in envs.iterdir()) == []


@pytest.mark.slow
def test_credential_in_requirements_reaches_only_the_installer(index: Index, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy whose model's requirements.txt carries an index password: uv gets it (the index
    sees it), the store, events, errors and the build log never do; the build fails at its
    import check (the model needs scikit-learn, not installed), and leaves no env or lock."""
    home = Path(os.environ["ORCHESTRATE_HOME"])
    envs = tmp_path / "envs"
    monkeypatch.setenv("ORCHESTRATE_ENVS_DIR", str(envs))
    model = _model(tmp_path / "model", f"--extra-index-url {index.with_credentials()}\n{PROBE}==0.1\n")
    result = _orchestrate("deploy", str(model), "--name", "private-index", "-C", "allow_index_options=true")
    assert result.returncode == 1, result.stderr
    assert "'sklearn'" in result.stderr and "--pip-requirements-override" in result.stderr, result.stderr
    assert any(path.startswith("/files/") for path in index.authorized), (index.authorized, index.refused)
    assert PASSWORD not in result.stdout + result.stderr
    status = _orchestrate("status", "1", "--json")
    history = _orchestrate("history", "private-index")
    assert PASSWORD not in status.stdout + history.stdout
    assert f"http://{USER}:***@127.0.0.1" in status.stdout  # the line is recorded, masked
    for file in home.rglob("*"):
        if file.is_file() and (home / "models") not in file.parents:
            assert PASSWORD.encode() not in file.read_bytes(), f"{file} holds the index password"
    # The model's snapshot is its own files, the password with them: readable by this user only.
    snapshot_requirements = next((home / "models").glob("*/requirements.txt"))
    assert snapshot_requirements.stat().st_mode & 0o077 == 0
    assert sorted(p.name for p in envs.iterdir()) == [], "the failed env, a lock or a requirements file is left"
