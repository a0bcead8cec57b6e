"""The test infrastructure itself: databases reachable, example models well formed, leak check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml

CONFTEST = Path(__file__).with_name("conftest.py")
REPO_ROOT = Path(__file__).parents[1]

MODEL_FILES = {
    "MLmodel",
    "requirements.txt",
    "python_env.yaml",
    "conda.yaml",
    "input_example.json",
    "serving_input_example.json",
}


def test_pg_url_connects(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_db_url_is_fresh_and_writable(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO probe (id) VALUES (1)"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 1
    finally:
        engine.dispose()


def test_environment_is_clean(orchestrate_home: Path) -> None:
    allowed = {"ORCHESTRATE_HOME", "ORCHESTRATE_TEST_PG_URL", "ORCHESTRATE_ENVS_DIR",
               "ORCHESTRATE_TEST_MLFLOW_URI"}
    assert {n for n in os.environ if n.startswith("ORCHESTRATE_")} <= allowed
    assert os.environ["ORCHESTRATE_HOME"] == str(orchestrate_home)
    assert list(orchestrate_home.iterdir()) == []
    assert Path(os.environ["ORCHESTRATE_ENVS_DIR"]).is_dir()
    assert not [n for n in os.environ if n.startswith("AZURE_")]
    assert [n for n in os.environ if n.startswith("AWS_")] == ["AWS_EC2_METADATA_DISABLED"]


@pytest.mark.parametrize("fixture", ["example_model", "example_model_v2", "broken_model"])
def test_example_models_are_mlflow_models(fixture: str, request: pytest.FixtureRequest) -> None:
    model: Path = request.getfixturevalue(fixture)
    assert MODEL_FILES <= {p.name for p in model.iterdir()}
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    assert "python_function" in mlmodel["flavors"]
    assert mlmodel["signature"]["inputs"]
    requirements = (model / "requirements.txt").read_text().split()
    assert "mlflow==3.17.2" in requirements
    payload = json.loads((model / "serving_input_example.json").read_text())
    assert len(payload["dataframe_split"]["columns"]) == 4


def test_example_versions_differ(example_model: Path, example_model_v2: Path) -> None:
    """v2 changes predictions on the input example; requirements stay identical."""
    pyfunc = pytest.importorskip("mlflow.pyfunc")
    pd = pytest.importorskip("pandas")
    split = json.loads((example_model / "serving_input_example.json").read_text())
    frame = pd.DataFrame(**split["dataframe_split"])
    v1 = pyfunc.load_model(str(example_model)).predict(frame)
    v2 = pyfunc.load_model(str(example_model_v2)).predict(frame)
    assert list(v1) != list(v2)
    assert (example_model / "requirements.txt").read_text() == (
        example_model_v2 / "requirements.txt"
    ).read_text()


def test_broken_model_fails_to_load(broken_model: Path, example_model: Path) -> None:
    pyfunc = pytest.importorskip("mlflow.pyfunc")
    with pytest.raises(RuntimeError, match="--broken"):
        pyfunc.load_model(str(broken_model))
    assert (broken_model / "requirements.txt").read_text() == (
        example_model / "requirements.txt"
    ).read_text()


def test_leak_check_fails_a_test_that_leaves_a_detached_process(tmp_path: Path) -> None:
    """A process that double-forks away from pytest is still found, killed and reported."""
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import subprocess, sys

            def test_leaks():
                # The intermediate shell exits at once: the sleep is reparented away.
                subprocess.run(
                    ["sh", "-c", "sleep 612 >/dev/null 2>&1 &"], check=True
                )

            def test_clean():
                subprocess.run([sys.executable, "-c", "pass"], check=True)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    # A teardown failure reports the test itself as passed, plus one error.
    assert "2 passed, 1 error" in output, output
    assert "sleep 612" in output, output
    leftover = [
        proc.pid
        for proc in psutil.process_iter(["cmdline"])
        if proc.info["cmdline"] == ["sleep", "612"] and proc.status() != psutil.STATUS_ZOMBIE
    ]
    assert leftover == [], "the leak check did not kill the leaked process"


def _run_check_script(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "check.sh")],
        env={**os.environ, "ORCHESTRATE_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_check_script_fails_naming_each_tool_that_finds_a_problem(tmp_path: Path) -> None:
    """scripts/check.sh (run by scripts/test.sh before pytest) with the repository's configuration,
    on a small tree: clean it passes; an unused import (ruff) and an unannotated function (mypy
    strict) each fail it, and both are reported in one run."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for script in ("check.sh", "_common.sh"):
        shutil.copy(REPO_ROOT / "scripts" / script, root / "scripts" / script)
    shutil.copy(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    for package in ("orchestrator", "targets", "scoring", "tests"):
        (root / package).mkdir()
        (root / package / "__init__.py").write_text('"""A package."""\n')
    clean = _run_check_script(root)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "lint and type checks passed" in clean.stderr

    (root / "targets" / "unused.py").write_text("import os\n")
    (root / "scoring" / "untyped.py").write_text("def double(x):\n    return 2 * x\n")
    found = _run_check_script(root)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "F401 [*] `os` imported but unused\n --> targets/unused.py:1:8" in found.stdout, found.stdout
    assert "scoring/untyped.py:1: error:" in found.stdout and "[no-untyped-def]" in found.stdout, found.stdout
    assert "ruff found the problems listed above" in found.stderr, found.stderr
    assert "mypy (strict) found the type errors listed above" in found.stderr, found.stderr
