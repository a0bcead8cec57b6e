"""``python -m scoring serve [MODEL_DIR]`` (the container entry) and ``python -m scoring predict``."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from scoring._version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scoring", description="Serve an MLflow model over HTTP.")
    parser.add_argument("--version", action="version", version=f"scoring {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model with gunicorn",
        description="Serve MODEL_DIR (default /opt/ml/model, or ORCHESTRATE_MODEL_DIR). "
        "Unset flags fall back to the environment, then to defaults (docs/scoring.md).",
    )
    serve.add_argument("model_dir", nargs="?", metavar="MODEL_DIR")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--private-port",
        type=int,
        help="also listen on 127.0.0.1:N for health checks (every address with --host 0.0.0.0)",
    )
    serve.add_argument("--workers", type=int)
    serve.add_argument("--threads", type=int)
    serve.add_argument("--timeout", type=float, help="per-request limit in seconds (504)")
    serve.add_argument("--graceful-timeout", type=float)
    serve.add_argument("--max-request-bytes", type=int)
    serve.add_argument("--model-name", help="the model's name in the V2 protocol")
    serve.add_argument("--loader", choices=("auto", "mlflow", "native"))
    serve.add_argument("--pid-file", help="write the gunicorn master's pid here")
    serve.add_argument("--reuse-port", action="store_true", default=None, help="bind with SO_REUSEPORT")
    serve.add_argument("--public-fd", type=int, help="serve on this inherited listening socket (not --host/--port)")
    serve.add_argument("--private-fd", type=int, help="also serve on this inherited socket (not --private-port)")
    serve.add_argument(
        "--handoff-socket",
        help="unix socket path handing the public listening socket to the next server (SCM_RIGHTS)",
    )
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", default=None)
    serve.add_argument("--log-level")
    predict = commands.add_parser(
        "predict",
        help="score one input file offline, through the server's own request handling",
        description="Score INPUT with MODEL_DIR without a server: the same parsing, checks and "
        "answer as POST /invocations.",
    )
    predict.add_argument("model_dir", metavar="MODEL_DIR")
    predict.add_argument("-i", "--input-path", required=True)
    predict.add_argument("-t", "--content-type", choices=("json", "csv"))
    predict.add_argument("-o", "--output-path")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(vars(args))
    if args.command == "predict":
        return predict(args.model_dir, args.input_path, args.content_type, args.output_path)
    return 2  # pragma: no cover - argparse rejects other commands


def serve(options: dict[str, Any]) -> int:
    """Load the model, then run gunicorn until it stops; the process exit code."""
    from scoring._config import load_config
    from scoring._errors import ModelLoadError

    overrides = {k: v for k, v in options.items() if k != "command" and v is not None}
    try:
        cfg = load_config(overrides)
    except ValueError as exc:
        print(f"scoring: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
    )
    from scoring._app import create_app
    from scoring._flavors import loads_after_fork
    from scoring._gunicorn import ScoringServer
    from scoring._metrics import Metrics
    from scoring._model import read_mlmodel

    metrics = Metrics(slots=cfg.workers * 2 + 2)
    # Everything loaded from here (libraries, the model) lives as long as the server: no
    # collections while it loads (they find nothing to free, and cost ~0.1 s of cold start),
    # then it is kept out of the cyclic garbage collector, so collections in a worker skip it
    # and do not write to (so do not copy) the pages it shares with the master.
    try:
        after_fork = loads_after_fork(read_mlmodel(os.path.abspath(cfg.model_dir.removeprefix("file://")))["flavors"])
    except ModelLoadError:
        after_fork = False  # loading it below says why it cannot be loaded
    if after_fork:

        def make_app() -> Any:
            try:
                return create_app({**overrides, "metrics": metrics})
            except ModelLoadError as exc:
                print(f"scoring: error: {exc}", file=sys.stderr)
                sys.exit(3)  # gunicorn's "worker failed to boot": the server stops

        ScoringServer(None, cfg, metrics, make_app=make_app).run()
        return 0
    gc.disable()
    try:
        app = create_app({**overrides, "metrics": metrics})
    except ModelLoadError as exc:
        print(f"scoring: error: {exc}", file=sys.stderr)
        return 1
    gc.freeze()
    gc.enable()
    ScoringServer(app, cfg, metrics).run()
    return 0


def predict(model_dir: str, input_path: str, content_type: str | None, output_path: str | None) -> int:
    """Answer one request from a file, as POST /invocations would; the process exit code."""
    from scoring._app import create_app
    from scoring._errors import ModelLoadError

    kind = content_type or ("csv" if input_path.lower().endswith(".csv") else "json")
    try:
        with open(input_path, "rb") as handle:
            body = handle.read()
    except OSError as exc:
        print(f"scoring: error: cannot read {input_path}: {exc.strerror}", file=sys.stderr)
        return 2
    with _stdout_to_stderr():  # what the model prints (Keras' progress bar) is not the answer
        try:
            app = create_app({"model_dir": model_dir, "access_log": False})
        except ModelLoadError as exc:
            print(f"scoring: error: {exc}", file=sys.stderr)
            return 1
        mime = "text/csv" if kind == "csv" else "application/json"
        response = app.test_client().post("/invocations", data=body, content_type=mime)
        answer = response.get_data(as_text=True)
    if response.status_code != 200:
        print(f"scoring: error: HTTP {response.status_code}: {answer}", file=sys.stderr)
        return 2 if response.status_code < 500 else 1
    if output_path:
        with open(output_path, "w") as handle:
            handle.write(answer)
    else:
        print(answer)
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 (Python's and native code's writes) to stderr for a while."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
