"""`orchestrate serve MODEL` and `orchestrate predict MODEL`: a model run straight from its
directory, like `mlflow models serve/predict`, in the environment the local target would use."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import ConfigError
from .model import environments, requirements
from .model import uri as model_uris
from .store import orchestrate_home

ENV_MANAGERS = ("virtualenv", "local")


def is_model_reference(ref: str) -> bool:
    """A model directory or file:// URI, as opposed to an endpoint name."""
    return ref.startswith("file://") or "/" in ref or Path(ref, "MLmodel").is_file()


def scoring_command(
    model_uri: str,
    arguments: Sequence[str],
    *,
    env_manager: str,
    overrides: Sequence[str],
    log: Callable[[str], None],
    policy: requirements.Policy = requirements.Policy(),  # noqa: B008 - a frozen value
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run `python -m scoring ARGUMENTS` for the model:
    in its cached virtualenv (built now if needed), or in this interpreter with `local`."""
    if env_manager not in ENV_MANAGERS:
        raise ConfigError(f"unknown --env-manager {env_manager!r}", hint=f"use one of {', '.join(ENV_MANAGERS)}")
    info = model_uris.local_model(model_uri, orchestrate_home() / "models")  # models:/… is downloaded
    requirements.check_policy(info.requirements, policy, how_to_allow="{flag}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    if env_manager == "local":
        python = sys.executable
    else:
        home = orchestrate_home()
        log_file = home / "logs" / "environments" / f"{info.digest[:12]}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        built = environments.model_environment(
            home=home,
            requirements=info.requirements,
            python_version=info.python_version,
            model_dir=info.path,
            overrides=overrides,
            log=log,
            log_file=log_file,
        )
        python = str(built.python)
        env["PYTHONPATH"] = str(environments.install_server(home))
    return [python, "-m", "scoring", *arguments[:1], str(info.path), *arguments[1:]], env


def predict(
    model_uri: str,
    body: bytes,
    content_type: str,
    *,
    env_manager: str = "virtualenv",
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = lambda _line: None,
    policy: requirements.Policy = requirements.Policy(),  # noqa: B008 - a frozen value
) -> bytes:
    """Score one request body (`json` or `csv`) offline with the model, as POST /invocations
    would, in the environment `scoring_command` picks; the answer's body. ConfigError for bad
    input (exit 2 of the scorer), TargetError when the model fails."""
    import subprocess
    import tempfile

    from .errors import TargetError

    with tempfile.TemporaryDirectory(prefix="orchestrate-predict-") as scratch:
        input_path, output_path = Path(scratch, f"input.{content_type}"), Path(scratch, "output")
        input_path.write_bytes(body)
        command, env = scoring_command(
            model_uri,
            ["predict", "-i", str(input_path), "-t", content_type, "-o", str(output_path)],
            env_manager=env_manager,
            overrides=overrides,
            log=log,
            policy=policy,
        )
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("scoring: error: ")
            raise (ConfigError if result.returncode == 2 else TargetError)(message)
        return output_path.read_bytes()
