"""Helpers shared by the benchmark scripts: timing, tables, throwaway stores."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG_URL_ENV = "ORCHESTRATE_TEST_PG_URL"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def timed(fn: Callable[[], object], runs: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def run_cli(args: Sequence[str], env: dict[str, str], check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one real `orchestrate` subprocess."""
    started = time.perf_counter()
    result = subprocess.run(["orchestrate", *args], env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if check and result.returncode != 0:
        raise SystemExit(f"orchestrate {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return took, result


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    sys.stdout.flush()


def pg_database(tag: str) -> tuple[str, Callable[[], None]] | None:
    """A fresh PostgreSQL database (URL, drop function), or None when no server is configured."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"orchestrate_bench_{tag}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server here: the caller skips PostgreSQL
        print(f"(PostgreSQL at {url.render_as_string()} unavailable: {exc.__class__.__name__}; skipped)")
        admin.dispose()
        return None

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def bench_env(home: Path, db_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATE_")}
    env["ORCHESTRATE_HOME"] = str(home)
    if db_url:
        env["ORCHESTRATE_DB_URL"] = db_url
    return env
