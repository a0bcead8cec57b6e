"""Hostile and careless command-line input (issue 11): a clear `Error: ...`, the right exit
code, no traceback, and, where the input is refused, a state store exactly as it was.

Every test drives the real CLI: click's CliRunner in-process (exit code, stdout and stderr
asserted separately), or `orchestrate` as a subprocess where a signal or the process's own
exit matters. Files are real: FIFOs (os.mkfifo), /dev/zero, anchor bombs, 20 MB files.

| finding | what was wrong on 1407a72 | tests |
|---|---|---|
| C1 | config files: anchor bombs, /dev/zero, FIFO, deep nesting, binary: tracebacks or hangs | test_hostile_config_file_is_refused (bomb-list, bomb-mapping, recursive-alias, deep-nesting, binary, dev-zero, fifo, many-values, twenty-mb) |
| C3 | numeric arguments: `²`, 20-digit ids and limits, `1e309s`, `nans`, `99999999999d` | test_numeric_argument_is_refused, test_event_since_is_bounded, test_gc_older_than_is_bounded |
| C4 | accepted, then crash or hang: port=99999, sleep_s=inf/nan, python=/etc/passwd, startup_timeout=nan/1e309, --lease-ttl inf | test_config_number_out_of_range_is_refused, test_python_that_is_not_an_interpreter_is_refused, test_worker_seconds_are_finite |
| C8 | `predict -o nodir/x/o.json` crashed after predicting | test_predict_output_in_a_missing_directory_is_refused_before_predicting, test_predict_name_bad_input_exits_2 |
| B1 | `deploy --keep-failed` (documented) refused on local, noop, docker | test_keep_failed_keeps_what_a_failed_deployment_made, tests/core/test_local_e2e.py::test_keep_failed_keeps_a_broken_first_deployments_server_until_cancel, tests/sagemaker/test_sagemaker_e2e.py::test_keep_failed_keeps_resources_for_resume |
| B3 | an invalid host reported as "port in use" | test_invalid_host_is_not_reported_as_port_in_use |
| B3 | `serve` with a bad host or busy port: gunicorn's "Can't connect" after 7 s | test_serve_checks_host_and_port_first |
| B4 | bad input found only in a stage (unset env:X, missing file:) recorded as a failed deployment; `file:/dev/zero` or a FIFO hung the stage | test_unresolvable_secret_reference_is_refused_before_recording, test_secret_file_that_is_no_file_is_refused_without_reading_it |
| K1 | `status ١` showed deployment 1 | test_numeric_argument_is_refused (status-arabic-indic) |
| K2 | `--name 7` allowed, but `status 7` shows deployment 7 (and `--name $'m\\n'` was accepted) | test_all_digit_endpoint_name_is_refused, test_endpoint_name_with_a_trailing_newline_is_refused |
| K3 | negative `--limit`/`--tail` meant "no limit" or dropped lines | test_numeric_argument_is_refused (negative-*) |
| K4 | `deploy --detach --queue`, `worker --targets nosuch` accepted silently | test_detach_and_queue_exclude_each_other, test_worker_unknown_target_is_refused |
| K6 | no size limit on config files (20 MB took 38 s to reject) | test_hostile_config_file_is_refused (twenty-mb) |
| K7 | Ctrl-C in the 100 ms after success exited 130 | test_ctrl_c_after_success_still_reports_success |
| K9 | `predict NAME -i bad.json` exited 1 where `predict MODEL` exits 2 | test_predict_name_bad_input_exits_2 |
| (guards) | what must keep working (these pass on 1407a72 too) | test_a_small_anchor_is_still_fine, test_bounded_arguments_still_work, test_ctrl_c_before_success_still_interrupts |

On 1407a72 the anchor bombs and /dev/zero cases exhaust memory (17 GB before they were
stopped) and the FIFO case hangs: run the old code under `ulimit -v` if you check that.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _executables import orchestrate_executable
from click.testing import CliRunner, Result
from sqlalchemy import select

from orchestrator.api import Client
from orchestrator.cli import cli
from orchestrator.store import make_engine
from orchestrator.store.tables import Base

Run = Callable[..., Result]


@pytest.fixture
def run(orchestrate_home: Path) -> Iterator[Run]:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, list(args), catch_exceptions=False)

    yield invoke


def store_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the home's SQLite store, to compare before and after."""
    engine = make_engine(f"sqlite:///{home / 'state.db'}")
    try:
        with engine.connect() as connection:
            return {name: sorted(map(tuple, connection.execute(select(table)).all()), key=repr)
                    for name, table in Base.metadata.tables.items()}
    finally:
        engine.dispose()


@pytest.fixture
def seeded(run: Run, example_model: Path, orchestrate_home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """A store with one succeeded noop deployment (id 1, endpoint `seed`), and all its rows."""
    result = run("deploy", str(example_model), "--name", "seed", "--target", "noop")
    assert result.exit_code == 0, result.stderr
    return store_rows(orchestrate_home)


def assert_refused(result: Result, fragment: str, *, code: int = 2) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Error: " in result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""


# -- C1, K6: config files ---------------------------------------------------------------------


def _list_bomb(path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path.write_text("\n".join(lines) + "\n")  # 10^10 values once expanded


def _mapping_bomb(path: Path) -> None:
    lines = ["m0: &m0 {k: v}"] + [f"m{i}: &m{i} {{x: *m{i - 1}, y: *m{i - 1}}}" for i in range(1, 40)]
    path.write_text("\n".join(lines) + "\n")  # 2^40 keys once flattened


CONFIG_FILES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "bomb-list": (_list_bomb, "expands to more than 10000 values"),
    "bomb-mapping": (_mapping_bomb, "expands to more than 10000 values"),
    "recursive-alias": (lambda p: p.write_text("a: &a [*a]\n"), "expands to more than 10000 values"),
    "deep-nesting": (lambda p: p.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                     "nests deeper than 64 levels"),
    "binary": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"), "is not UTF-8 text (byte 0 is 0x89)"),
    "dev-zero": (None, "is a character device, not a regular file"),  # type: ignore[dict-item]
    "fifo": (os.mkfifo, "is a FIFO, not a regular file"),
    "many-values": (lambda p: p.write_text("".join(f"k{i}: {i}\n" for i in range(20_000))),
                    "holds more than 10000 values"),
    "twenty-mb": (lambda p: p.write_text('port: "' + "9" * (20 * 1024 * 1024) + '"\n'),
                  "is larger than 1024 KiB"),
}


@pytest.mark.parametrize("kind", list(CONFIG_FILES))
def test_hostile_config_file_is_refused(run: Run, seeded: Any, example_model: Path, orchestrate_home: Path,
                                        tmp_path: Path, kind: str) -> None:
    make, fragment = CONFIG_FILES[kind]
    path = Path("/dev/zero") if make is None else tmp_path / "config.yaml"
    if make is not None:
        make(path)
    result = run("deploy", str(example_model), "--name", "m", "-t", "noop", "--config", str(path))
    assert_refused(result, f"config file {path} ")
    assert fragment in result.stderr
    assert store_rows(orchestrate_home) == seeded


def test_a_small_anchor_is_still_fine(run: Run, example_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("max_attempts: &n 2\nmax_attempts.build: *n\n")
    result = run("deploy", str(example_model), "--name", "m", "-t", "noop", "--config", str(config), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["config"]["max_attempts.build"] == 2


# -- C3, K1, K3: numeric arguments ------------------------------------------------------------

TWENTY_DIGITS = "9" * 20


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["status", "²"], "'²' is not a deployment id: ids are written with the digits 0-9"),
        (["status", "١"], "'١' is not a deployment id: ids are written with the digits 0-9"),
        (["history", "١"], "'١' is not a deployment id: ids are written with the digits 0-9"),
        (["status", TWENTY_DIGITS], f"{TWENTY_DIGITS} is not a deployment id (ids go up to 2147483647)"),
        (["history", TWENTY_DIGITS], f"{TWENTY_DIGITS} is not a deployment id"),
        (["resume", TWENTY_DIGITS], "is not a deployment id from 1 to 2147483647"),
        (["resume", "١"], "'١' is not a deployment id (digits 0-9 only)"),
        (["cancel", TWENTY_DIGITS], "is not a deployment id from 1 to 2147483647"),
        (["rollback", "seed", "--to", TWENTY_DIGITS], "is not a deployment id from 1 to 2147483647"),
        (["list", "--limit", TWENTY_DIGITS], "is not a count from 1 to 1000000"),
        (["history", "seed", "--limit", TWENTY_DIGITS], "is not a count from 1 to 1000000"),
        (["list", "--limit", "-1"], "-1 is not a count from 1 to 1000000"),
        (["list", "--limit", "0"], "0 is not a count from 1 to 1000000"),
        (["history", "seed", "--limit", "-5"], "-5 is not a count from 1 to 1000000"),
        (["logs", "seed", "--tail", "-3"], "-3 is not a count from 1 to 1000000"),
    ],
    ids=["status-superscript", "status-arabic-indic", "history-arabic-indic", "status-20-digits",
         "history-20-digits", "resume-20-digits", "resume-arabic-indic", "cancel-20-digits",
         "rollback-to-20-digits", "list-limit-20-digits", "history-limit-20-digits", "negative-list-limit",
         "zero-list-limit", "negative-history-limit", "negative-logs-tail"],
)
def test_numeric_argument_is_refused(run: Run, seeded: Any, orchestrate_home: Path, args: list[str],
                                     fragment: str) -> None:
    assert_refused(run(*args), fragment)
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize(
    ("since", "fragment"),
    [
        ("1e309s", "--since '1e309s' is not an event id, a duration"),
        ("nans", "--since 'nans' is not an event id, a duration"),
        ("99999999999d", "duration '99999999999d' is longer than 36500 days"),
        (TWENTY_DIGITS, f"--since {TWENTY_DIGITS} is not an event id (ids go up to 2147483647)"),
    ],
)
def test_event_since_is_bounded(run: Run, seeded: Any, orchestrate_home: Path, since: str, fragment: str) -> None:
    assert_refused(run("events", "--since", since), fragment)
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize("older_than", ["1e309d", "nand", "99999999999d", "-1d", "²d"])
def test_gc_older_than_is_bounded(run: Run, seeded: Any, orchestrate_home: Path, older_than: str) -> None:
    result = run("gc", "--older-than", older_than)
    assert_refused(result, "Invalid value for '--older-than'")
    assert store_rows(orchestrate_home) == seeded


def test_bounded_arguments_still_work(run: Run, seeded: Any) -> None:
    assert run("status", "1").exit_code == 0
    assert run("list", "--limit", "1000000").exit_code == 0
    assert run("events", "--since", "36500d").exit_code == 0
    assert json.loads(run("gc", "--older-than", "1d", "--dry-run", "--json").stdout)["deployments"] == 0


# -- C4: config numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "assignment", "fragment"),
    [
        ("local", "port=99999", "config key 'port' (-C) must be at least 0 and at most 65535; got 99999"),
        ("noop", "sleep_s=inf", "config key 'sleep_s' (-C) must be float (a finite number), got 'inf'"),
        ("noop", "sleep_s=nan", "config key 'sleep_s' (-C) must be float (a finite number), got 'nan'"),
        ("noop", "sleep_s=1e309", "must be float (a finite number), got '1e309'"),
        ("noop", "startup_timeout=nan", "config key 'startup_timeout' (-C) must be float (a finite number)"),
        ("noop", "startup_timeout=1e309", "config key 'startup_timeout' (-C) must be float (a finite number)"),
        ("noop", "startup_timeout=1e9", "must be at least 1 and at most 86400"),
        ("noop", "max_attempts=١", "config key 'max_attempts' (-C) must be int (a whole number), got '١'"),
        ("noop", f"max_attempts={TWENTY_DIGITS}", "must be at least 1 and at most 100"),
    ],
)
def test_config_number_out_of_range_is_refused(run: Run, seeded: Any, example_model: Path, orchestrate_home: Path,
                                               target: str, assignment: str, fragment: str) -> None:
    assert_refused(run("deploy", str(example_model), "--name", "m", "-t", target, "-C", assignment), fragment)
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize("document", ["port: .inf\n", "port: 8080.5\n", "startup_timeout: .nan\n"])
def test_config_file_number_out_of_range_is_refused(run: Run, seeded: Any, example_model: Path,
                                                    orchestrate_home: Path, tmp_path: Path, document: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(document)
    result = run("deploy", str(example_model), "--name", "m", "--config", str(config))
    assert_refused(result, "(config file) must be ")
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize(("python", "fragment"), [("/etc/passwd", "Permission denied"), ("/bin/true", "it does not run Python code")])
def test_python_that_is_not_an_interpreter_is_refused(run: Run, seeded: Any, example_model: Path,
                                                      orchestrate_home: Path, python: str, fragment: str) -> None:
    result = run("deploy", str(example_model), "--name", "m", "-C", f"python={python}")
    assert_refused(result, f"-C python={python} is not a Python 3 interpreter that runs")
    assert fragment in result.stderr
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize(("option", "value"), [("--lease-ttl", "inf"), ("--lease-ttl", "nan"),
                                               ("--lease-ttl", "1e309"), ("--poll-interval", "nan")])
def test_worker_seconds_are_finite(run: Run, option: str, value: str) -> None:
    assert_refused(run("worker", "--once", option, value), f"Invalid value for '{option}'")


# -- B1: --keep-failed ------------------------------------------------------------------------


def test_keep_failed_keeps_what_a_failed_deployment_made(run: Run, example_model: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_FAULTS", "health_check:permanent")
    failed = run("deploy", str(example_model), "--name", "kept", "-t", "noop", "--keep-failed")
    assert failed.exit_code == 1, failed.stderr
    assert "what it created is kept (keep_failed): `orchestrate cancel 1` releases it" in failed.stderr
    record = json.loads(run("status", "1", "--json").stdout)
    assert record["status"] == "failed"
    assert [(r["kind"], r["state"]) for r in record["resources"]] == [("noop", "created")]

    monkeypatch.delenv("ORCHESTRATE_FAULTS")
    assert run("resume", "1").exit_code == 0  # resume adopts what was kept
    assert [(r["kind"], r["state"]) for r in json.loads(run("status", "1", "--json").stdout)["resources"]] \
        == [("noop", "created")]


def test_without_keep_failed_a_failure_releases_and_cancel_releases_what_was_kept(
        run: Run, example_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_FAULTS", "health_check:permanent")
    assert run("deploy", str(example_model), "--name", "gone", "-t", "noop").exit_code == 1
    assert [r["state"] for r in json.loads(run("status", "1", "--json").stdout)["resources"]] == ["deleted"]
    assert run("deploy", str(example_model), "--name", "kept", "-t", "noop", "-C", "keep_failed=true").exit_code == 1
    assert run("cancel", "2").exit_code == 0
    assert [r["state"] for r in json.loads(run("status", "2", "--json").stdout)["resources"]] == ["deleted"]


# -- B3: hosts and ports ----------------------------------------------------------------------


@pytest.mark.parametrize(("host", "fragment"), [
    ("999.1.1.1", "cannot listen on host '999.1.1.1': it is not an IPv4 address or a name this machine resolves"),
    ("10.255.255.254", "cannot listen on host '10.255.255.254': it is not an address of this machine"),
    ("", "the host to listen on is empty"),
])
def test_invalid_host_is_not_reported_as_port_in_use(run: Run, seeded: Any, example_model: Path,
                                                     orchestrate_home: Path, host: str, fragment: str) -> None:
    for port in ([], ["-C", "port=18123"]):
        result = run("deploy", str(example_model), "--name", "m", "-C", f"host={host}", *port)
        assert_refused(result, fragment)
        assert "in use" not in result.stderr
    assert store_rows(orchestrate_home) == seeded


def _orchestrate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([orchestrate_executable(), *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_serve_checks_host_and_port_first(example_model: Path) -> None:
    bad_host = _orchestrate("serve", str(example_model), "--host", "999.1.1.1", "--env-manager", "local")
    assert bad_host.returncode == 2, bad_host.stderr
    assert bad_host.stderr.startswith("Error: cannot listen on host '999.1.1.1'")
    assert "with --host" in bad_host.stderr and "Can't connect" not in bad_host.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        in_use = _orchestrate("serve", str(example_model), "--port", str(port), "--env-manager", "local")
    assert in_use.returncode == 2, in_use.stderr
    assert in_use.stderr.startswith(f"Error: port {port} on 127.0.0.1 is in use by another program")
    assert "Traceback" not in bad_host.stderr + in_use.stderr


# -- B4: bad input found only in a stage ------------------------------------------------------


@pytest.mark.parametrize(("reference", "fragment"), [
    ("env:ORCHESTRATE_TEST_UNSET_TOKEN", "refers to environment variable ORCHESTRATE_TEST_UNSET_TOKEN, which is not set"),
    ("file:/nonexistent/token", ("refers to file /nonexistent/token, which cannot be used: "
                                 "file /nonexistent/token does not exist")),
])
def test_unresolvable_secret_reference_is_refused_before_recording(
        run: Run, seeded: Any, example_model: Path, orchestrate_home: Path, reference: str, fragment: str) -> None:
    result = run("deploy", str(example_model), "--name", "m", "-t", "noop", "-C", f"api_token={reference}")
    assert_refused(result, fragment)
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize(("kind", "fragment"), [("dev-zero", "is a character device, not a regular file"),
                                                ("fifo", "is a FIFO, not a regular file"),
                                                ("binary", "is not UTF-8 text")])
def test_secret_file_that_is_no_file_is_refused_without_reading_it(
        run: Run, seeded: Any, example_model: Path, orchestrate_home: Path, tmp_path: Path, kind: str,
        fragment: str) -> None:
    path = Path("/dev/zero") if kind == "dev-zero" else tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe" + b"\x00" * 64)
    result = run("deploy", str(example_model), "--name", "m", "-t", "noop", "-C", f"api_token=file:{path}")
    assert_refused(result, f"config key 'api_token' refers to file {path}, which cannot be used")
    assert fragment in result.stderr
    assert store_rows(orchestrate_home) == seeded


# -- K2, K4: ambiguous and contradictory arguments --------------------------------------------


def test_all_digit_endpoint_name_is_refused(run: Run, seeded: Any, example_model: Path,
                                            orchestrate_home: Path) -> None:
    result = run("deploy", str(example_model), "--name", "7", "-t", "noop")
    assert_refused(result, "invalid endpoint name '7': a name of digits only reads as a deployment id")
    assert "--name model-7" in result.stderr
    assert store_rows(orchestrate_home) == seeded
    assert run("deploy", str(example_model), "--name", "7a", "-t", "noop").exit_code == 0


def test_endpoint_name_with_a_trailing_newline_is_refused(run: Run, seeded: Any, example_model: Path,
                                                          orchestrate_home: Path) -> None:
    result = run("deploy", str(example_model), "--name", "m\n", "-t", "noop")
    assert_refused(result, "invalid endpoint name 'm\\n'")
    assert store_rows(orchestrate_home) == seeded


def test_detach_and_queue_exclude_each_other(run: Run, seeded: Any, example_model: Path,
                                             orchestrate_home: Path) -> None:
    result = run("deploy", str(example_model), "--name", "m", "-t", "noop", "--detach", "--queue")
    assert_refused(result, "--detach and --queue exclude each other")
    assert store_rows(orchestrate_home) == seeded


@pytest.mark.parametrize("targets", ["nosuch", "noop,nosuch", ","])
def test_worker_unknown_target_is_refused(run: Run, targets: str) -> None:
    assert_refused(run("worker", "--once", "--targets", targets), "Invalid value for --targets")


# -- K7: Ctrl-C after success -----------------------------------------------------------------


def test_ctrl_c_after_success_still_reports_success(example_model: Path) -> None:
    process = subprocess.Popen([orchestrate_executable(), "deploy", str(example_model), "--name", "m", "-t", "noop"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    interrupted = False
    for line in process.stderr:
        if line.strip() == "deployment 1: deployment 1 succeeded":
            process.send_signal(signal.SIGINT)  # in the report that follows the commit
            interrupted = True
            break
    stdout, stderr = process.communicate(timeout=60)
    assert interrupted
    assert process.returncode == 0, stderr
    assert stdout == "deployment 1 succeeded: m is live\n"
    assert "Interrupted" not in stderr


def test_ctrl_c_before_success_still_interrupts(example_model: Path) -> None:
    process = subprocess.Popen([orchestrate_executable(), "deploy", str(example_model), "--name", "m", "-t", "noop",
                                "-C", "sleep_s=30"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "validate attempt 1 started" in line:
            process.send_signal(signal.SIGINT)
            break
    _stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted." in stderr


# -- C8, K9: predict --------------------------------------------------------------------------


@pytest.mark.parametrize("output", ["nodir/x/o.json", "o.json/x"])
def test_predict_output_in_a_missing_directory_is_refused_before_predicting(
        run: Run, example_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("predict", str(example_model), "-i", str(example_model / "serving_input_example.json"),
                 "-o", output, "--env-manager", "local")
    assert_refused(result, f"-o {output}")
    assert "does not exist" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["/dev/zero", "fifo"])
def test_predict_input_must_be_a_regular_file(run: Run, example_model: Path, tmp_path: Path, path: str) -> None:
    if path == "fifo":
        os.mkfifo(tmp_path / "fifo")
        path = str(tmp_path / "fifo")
    result = run("predict", str(example_model), "-i", path, "--env-manager", "local")
    assert_refused(result, f"input file {path} is ")


@pytest.mark.slow
def test_predict_name_bad_input_exits_2(run: Run, example_model: Path, tmp_path: Path) -> None:
    # Deployed by a subprocess: the server outlives the command, as it does for a user.
    deployed = _orchestrate("deploy", str(example_model), "--name", "live", timeout=600)
    assert deployed.returncode == 0, deployed.stderr
    try:
        bad = tmp_path / "bad.json"
        bad.write_text('{"inputs": "not rows"}')
        result = run("predict", "live", "-i", str(bad))
        assert_refused(result, "endpoint live refused the input (HTTP 400)")
        result = run("predict", "live", "-i", str(example_model / "serving_input_example.json"),
                     "-o", str(tmp_path / "nodir" / "x" / "o.json"))
        assert_refused(result, "directory " + str(tmp_path / "nodir" / "x") + " does not exist")
        good = run("predict", "live", "-i", str(example_model / "serving_input_example.json"),
                   "-o", str(tmp_path / "o.json"))
        assert good.exit_code == 0, good.stderr
        assert json.loads((tmp_path / "o.json").read_text()) == {"predictions": [0, 1, 2, 2]}
    finally:
        client = Client()
        try:
            client.delete("live")
        finally:
            client.close()
