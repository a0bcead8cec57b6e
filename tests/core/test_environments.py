"""Serving environments: the one requirements rule (mlflow → mlflow-skinny plus what
mlflow.pyfunc needs), the import check that fails `build` instead of the health check, and the
plain pyfunc that found the bug (issue 10) served for real by `predict MODEL` and the local target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from _plain_pyfunc import ANSWER, save_plain_pyfunc
from packaging.requirements import Requirement
from packaging.version import Version

from orchestrator import images
from orchestrator.errors import ConfigError, PermanentTargetError
from orchestrator.model import environments, requirements

MLFLOW = metadata.version("mlflow")
SERVER = ("flask>=3.0",)


def _full_mlflow_pin(name: str) -> Requirement:
    """What full mlflow (the installed release) itself requires of `name`."""
    found = [Requirement(r) for r in metadata.requires("mlflow") or [] if Requirement(r).name.lower() == name]
    assert found, f"mlflow {MLFLOW} does not require {name}"
    return found[0]


# -- the rule ------------------------------------------------------------------------------------


def test_skinny_brings_numpy_and_pandas_at_full_mlflows_own_pins() -> None:
    plan = requirements.serving_requirements([f"mlflow=={MLFLOW}", "cloudpickle==3.1.3"],
                                             server_requirements=SERVER)
    by_name = {Requirement(r).name: Requirement(r) for r in plan.requirements}
    assert by_name["mlflow-skinny"].specifier == Requirement(f"x=={MLFLOW}").specifier
    assert "mlflow" not in by_name
    for name in ("numpy", "pandas"):
        assert by_name[name].specifier == _full_mlflow_pin(name).specifier
    assert plan.fallback == (f"mlflow=={MLFLOW}", "cloudpickle==3.1.3", *SERVER)
    assert any("mlflow-skinny" in note and "numpy" in note for note in plan.notes)


def test_the_models_own_pins_are_kept_and_intersected_with_mlflows() -> None:
    plan = requirements.serving_requirements([f"mlflow=={MLFLOW}", "numpy==1.26.4", "Flask==3.0.3"],
                                             server_requirements=SERVER)
    by_name = {requirements.requirement_name(r): Requirement(r) for r in plan.requirements}
    assert by_name["numpy"].specifier == Requirement("numpy==1.26.4").specifier & _full_mlflow_pin("numpy").specifier
    assert by_name["flask"].specifier == Requirement("flask==3.0.3,>=3.0").specifier  # one line per project
    assert len(plan.requirements) == len(by_name)


def test_overrides_win_and_keep_their_commas() -> None:
    overrides = requirements.parse_overrides("numpy>=1.2,<2, pandas==2.2.3,scikit-learn")
    assert overrides == ["numpy>=1.2,<2", "pandas==2.2.3", "scikit-learn"]
    plan = requirements.serving_requirements([f"mlflow=={MLFLOW}"], overrides)
    assert "numpy>=1.2,<2" in plan.requirements and "pandas==2.2.3" in plan.requirements
    assert not any(r.startswith(("numpy<", "pandas<")) for r in plan.requirements)


def test_a_malformed_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a valid requirement"):
        requirements.parse_overrides("numpy>=>1")


def test_extras_or_unknown_dependencies_fall_back_to_full_mlflow_and_say_so() -> None:
    extras = requirements.serving_requirements([f"mlflow[extras]=={MLFLOW}"])
    assert extras.requirements == (f"mlflow[extras]=={MLFLOW}",) and extras.fallback is None
    assert "full mlflow" in extras.notes[0]
    unknown = requirements.serving_requirements([f"mlflow=={MLFLOW}"], mlflow_requires=lambda spec: None)
    assert unknown.requirements == (f"mlflow=={MLFLOW}",) and "full mlflow" in unknown.notes[0]


def test_images_and_local_environments_use_the_same_rule(tmp_path: Path) -> None:
    import scoring

    plan = requirements.serving_requirements([f"mlflow=={MLFLOW}"], ["six"],
                                             server_requirements=scoring.SERVER_REQUIREMENTS)
    assert images.image_requirements([f"mlflow=={MLFLOW}"], "six", home=tmp_path) == list(plan.requirements)


def test_an_image_falls_back_to_full_mlflow_of_the_same_pin() -> None:
    served = images.image_requirements([f"mlflow=={MLFLOW}; python_version >= '3.9'"], None)
    full = requirements.with_full_mlflow(served)
    assert full is not None and full[0] == f'mlflow=={MLFLOW}; python_version >= "3.9"' and full[1:] == tuple(served[1:])
    assert requirements.with_full_mlflow(["scikit-learn"]) is None


def test_requirements_without_mlflow_are_left_alone() -> None:
    plan = requirements.serving_requirements(["scikit-learn==1.5.2"], server_requirements=SERVER)
    assert plan.requirements == ("scikit-learn==1.5.2", *SERVER) and plan.fallback is None and not plan.notes


# -- model directories as MLflow writes them ----------------------------------------------------


def test_conda_yaml_only_model_uses_its_pip_section(tmp_path: Path) -> None:
    (tmp_path / "conda.yaml").write_text(
        "channels: [conda-forge]\ndependencies:\n- python=3.8.10\n- pip<=23.0\n"
        f"- pip:\n  - mlflow=={MLFLOW}\n  - scikit-learn==1.3.2\n")
    assert requirements.read_model_requirements(tmp_path) == (f"mlflow=={MLFLOW}", "scikit-learn==1.3.2")


def test_conda_only_dependencies_are_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "conda.yaml").write_text("dependencies:\n- python=3.8\n- cudatoolkit=11.8\n- conda-forge::libgdal\n"
                                         "- pip:\n  - mlflow\n")
    with pytest.raises(ConfigError) as raised:
        requirements.read_model_requirements(tmp_path)
    assert "cudatoolkit=11.8" in raised.value.message and "conda-forge::libgdal" in raised.value.message
    assert "requirements.txt" in (raised.value.hint or "")


def test_python_env_asking_for_another_python_finds_an_installed_one() -> None:
    other = "3.12" if sys.version_info[:2] != (3, 12) else "3.11"
    if not list((Path.home() / ".pyenv" / "versions").glob(f"{other}.*")):
        pytest.fail(f"this machine is expected to have pyenv's Python {other} (see the README's set-up)")
    python, warning = environments.find_python(f"{other}.1")
    assert warning is None
    reported = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert reported == other


def test_python_env_asking_for_a_missing_python_says_which_is_used() -> None:
    python, warning = environments.find_python("3.4.10")
    assert python == sys.executable
    assert warning is not None and "3.4" in warning and f"{sys.version_info[0]}.{sys.version_info[1]}" in warning
    assert "\n" not in warning


# -- the import check ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def plain_pyfunc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_plain_pyfunc(tmp_path_factory.mktemp("plain") / "model")


def test_the_plain_pyfunc_is_what_mlflow_writes(plain_pyfunc: Path) -> None:
    lines = (plain_pyfunc / "requirements.txt").read_text().split()
    assert [Requirement(line).name for line in lines] == ["mlflow", "cloudpickle"]


def test_a_model_with_only_the_conda_yaml_mlflow_wrote_reads_its_pip_section(plain_pyfunc: Path,
                                                                            tmp_path: Path) -> None:
    from orchestrator.model import mlmodel

    older = tmp_path / "older"
    shutil.copytree(plain_pyfunc, older)
    (older / "requirements.txt").unlink()
    (older / "python_env.yaml").unlink()
    info = mlmodel.read_model(str(older))
    assert info.requirements == tuple((plain_pyfunc / "requirements.txt").read_text().split())


def test_serving_imports_name_the_loader_and_what_it_unpickles_with(plain_pyfunc: Path) -> None:
    imports = environments.serving_imports(plain_pyfunc, [f"mlflow-skinny=={MLFLOW}"])
    assert {"mlflow.pyfunc", "mlflow.pyfunc.model", "cloudpickle", "numpy", "pandas", "flask"} <= set(imports)
    assert environments.serving_imports(plain_pyfunc, ["cloudpickle"])[-1] == "mlflow.pyfunc.model"


@pytest.mark.slow
def test_a_missing_module_fails_build_and_the_env_is_not_kept(plain_pyfunc: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Without mlflow in its requirements the model cannot load: `build` says so, naming the
    modules and the override; the half-good env is removed, and no lock file is left."""
    envs = tmp_path / "envs"
    monkeypatch.setenv("ORCHESTRATE_ENVS_DIR", str(envs))
    log_file = tmp_path / "build.log"
    lines: list[str] = []
    import scoring

    wanted = ["cloudpickle", *scoring.SERVER_REQUIREMENTS]
    with pytest.raises(PermanentTargetError) as raised:
        environments.ensure_environment(home=tmp_path, python=sys.executable, requirements=wanted, log=lines.append,
                                        log_file=log_file, model_dir=plain_pyfunc,
                                        imports=environments.serving_imports(plain_pyfunc, wanted))
    message = raised.value.message
    assert "'numpy'" in message and "'pandas'" in message and "'mlflow'" in message, message
    assert "--pip-requirements-override 'numpy,pandas,mlflow" in (raised.value.hint or "")
    assert [p.name for p in envs.iterdir()] == [".metadata"] or not list(envs.iterdir())
    # Next time it is built (and checked) again, never reused as good.
    with pytest.raises(PermanentTargetError):
        environments.ensure_environment(home=tmp_path, python=sys.executable, requirements=wanted, log=lines.append,
                                        log_file=log_file, model_dir=plain_pyfunc,
                                        imports=environments.serving_imports(plain_pyfunc, wanted))
    assert sum("building environment" in line for line in lines) == 2
    assert not list(envs.glob("*.lock")) and not list(envs.glob("*.requirements.txt"))


# -- the skinny regression, served for real ------------------------------------------------------


def _orchestrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=900, env=env, check=False)


@pytest.mark.slow
def test_predict_serves_the_plain_pyfunc_in_an_env_without_scikit_learn(plain_pyfunc: Path) -> None:
    result = _orchestrate("predict", str(plain_pyfunc), "-i", str(plain_pyfunc / "request.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ANSWER
    assert "mlflow-skinny" in result.stderr, result.stderr
    cloudpickle_pin = (plain_pyfunc / "requirements.txt").read_text().split()[1]
    env_python = next(marker.parent / "bin" / "python"
                      for marker in Path(os.environ["ORCHESTRATE_ENVS_DIR"]).glob("*/.orchestrate-env.json")
                      if {f"mlflow-skinny=={MLFLOW}", cloudpickle_pin} <= set(json.loads(marker.read_text())["requirements"]))
    probe = ("import importlib.util as u, json, numpy, pandas; "
             "print(json.dumps([u.find_spec('sklearn') is None, numpy.__version__, pandas.__version__]))")
    no_sklearn, numpy_version, pandas_version = json.loads(
        subprocess.run([str(env_python), "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert no_sklearn, "scikit-learn is in the env: this test would not see the bug"
    assert Version(numpy_version) in _full_mlflow_pin("numpy").specifier
    assert Version(pandas_version) in _full_mlflow_pin("pandas").specifier


@pytest.mark.slow
def test_the_local_target_deploys_and_answers_the_plain_pyfunc(plain_pyfunc: Path, orch) -> None:  # type: ignore[no-untyped-def]
    deployed = orch.run("deploy", str(plain_pyfunc), "--name", "plain", timeout=900)
    assert deployed.returncode == 0, orch.describe(deployed)
    answer = orch.ok("predict", "plain", "-i", str(plain_pyfunc / "request.json"))
    assert json.loads(answer.stdout) == ANSWER
