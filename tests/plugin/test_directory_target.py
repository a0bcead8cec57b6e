"""The third-party target example (examples/orchestrate-directory), pip-installed into a fresh
virtualenv: found by `orchestrate targets`, deployed, crashed and resumed, rolled back,
deleted, and reached through the MLflow plugin as `orchestrate:/directory`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.model import mlmodel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "orchestrate-directory"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv that sees this interpreter's packages (orchestrate, mlflow) and has
    the example installed with pip's own machinery (built from a copy, not in the repo)."""
    root = tmp_path_factory.mktemp("directory-venv")
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    venv = root / "venv"
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "--system-site-packages", "--python", sys.executable, str(venv)],
                       check=True)
        install = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
    else:
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    # --no-deps: its one dependency, orchestrate, is this checkout, seen through the system site.
    subprocess.run([*install, "--no-deps", str(source)], check=True)
    return venv / "bin" / "python"


def orchestrate(python: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "orchestrator", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, timeout=300, check=False)


def ok(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = orchestrate(python, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def status(python: Path, ref: str) -> Any:
    return json.loads(ok(python, "status", ref, "--json").stdout)


def releases(endpoint_dir: Path) -> list[str]:
    return sorted(path.name for path in (endpoint_dir / "releases").iterdir())


def test_installed_only_in_the_virtualenv(venv_python: Path) -> None:
    listed = ok(venv_python, "targets").stdout
    assert "directory: publishes the model into a shared directory" in listed
    assert "link_name" in listed
    here = subprocess.run([sys.executable, "-m", "orchestrator", "targets"], capture_output=True, text=True,
                          check=True)
    assert "directory" not in here.stdout  # the test interpreter itself does not have it


def test_deploy_crash_resume_rollback_delete(venv_python: Path, example_model: Path, example_model_v2: Path,
                                             tmp_path: Path) -> None:
    root = tmp_path / "published"
    endpoint_dir = root / "churn"
    link = endpoint_dir / "current"

    missing_root = orchestrate(venv_python, "deploy", str(example_model), "--name", "churn", "--target", "directory")
    assert missing_root.returncode == 2 and "needs a root directory" in missing_root.stderr
    assert "Traceback" not in missing_root.stderr

    first = ok(venv_python, "deploy", str(example_model), "--name", "churn", "--target", "directory",
               "-C", f"root={root}")
    assert f"live at {link.as_uri()}" in first.stdout
    assert link.is_symlink() and mlmodel.digest(link.resolve()) == status(venv_python, "1")["model_digest"]
    import mlflow.pyfunc  # a consumer loads what the link points at

    assert len(mlflow.pyfunc.load_model(str(link)).predict(_frame(example_model))) == 4

    # Killed after the copy, before the switch: consumers still load v1; resume finishes it.
    crashed = orchestrate(venv_python, "deploy", str(example_model_v2), "--name", "churn", "--target", "directory",
                          "-C", f"root={root}", env={"ORCHESTRATE_FAULTS": "shift_traffic:crash-before"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert os.readlink(link) == "releases/" + releases(endpoint_dir)[0]
    assert len(releases(endpoint_dir)) == 2
    ok(venv_python, "resume", "2")
    second = status(venv_python, "churn")
    assert second["live_deployment_id"] == 2
    assert second["live"]["runtime"]["serving_this"] is True
    assert mlmodel.digest(link.resolve()) == second["live"]["model_digest"]
    assert releases(endpoint_dir) == [f"2-{second['live']['model_digest'][:12]}"]  # cleanup removed v1's

    ok(venv_python, "rollback", "churn")
    third = status(venv_python, "churn")
    assert third["live"]["model_digest"] == status(venv_python, "1")["model_digest"]
    assert os.readlink(link) == f"releases/3-{third['live']['model_digest'][:12]}"

    deleted = subprocess.run([str(venv_python), "-c", "import orchestrator; print(orchestrator.delete('churn'))"],
                             capture_output=True, text=True, check=True)
    assert "link" in deleted.stdout and "release" in deleted.stdout
    assert not link.exists() and not link.is_symlink() and releases(endpoint_dir) == []


def test_reached_through_the_mlflow_plugin(venv_python: Path, example_model: Path, tmp_path: Path) -> None:
    root = tmp_path / "published"
    created = subprocess.run(
        [str(venv_python), "-m", "mlflow", "deployments", "create", "-t", "orchestrate:/directory", "--name", "churn",
         "-m", str(example_model), "-C", f"root={root}"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)
    assert created.returncode == 0, created.stderr
    assert (root / "churn" / "current" / "MLmodel").is_file()
    assert status(venv_python, "churn")["target"] == "directory"
    script = ("from mlflow.deployments import get_deploy_client\n"
              "client = get_deploy_client('orchestrate:/directory')\n"
              "print(client.get_deployment('churn')['url'])\n"
              "client.delete_deployment('churn')\n"
              "client.delete_deployment('churn')\n")
    answered = subprocess.run([str(venv_python), "-c", script], capture_output=True, text=True, check=True)
    assert answered.stdout.strip() == (root / "churn" / "current").as_uri()
    assert not (root / "churn" / "current").exists()


def _frame(model: Path) -> Any:
    import pandas as pd

    split = json.loads((model / "serving_input_example.json").read_text())["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])
