"""Process discovery through psutil (orchestrator/processes.py), on real processes: what the
local target uses to find its server and leases use to spot a dead holder."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psutil

from orchestrator.processes import find_started_with, pid_alive, started_with


def test_a_live_process_is_alive_and_a_reaped_or_zombie_one_is_not() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert not pid_alive(-1)


def test_a_server_is_found_by_a_word_of_its_command_line_and_its_workers_are_not() -> None:
    marker = f"/tmp/orchestrate-test-{uuid.uuid4().hex}.pid"
    # A master that starts a worker with the same command line, as gunicorn does.
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]]); "
            "print('ready', flush=True); time.sleep(60)")
    master = subprocess.Popen([sys.executable, "-c", code, marker], stdout=subprocess.PIPE, text=True)
    try:
        # Until the child has exec'd, its command line is still pytest's.
        assert master.stdout is not None and master.stdout.readline().strip() == "ready"
        assert started_with(master.pid, marker)
        assert not started_with(master.pid, marker + "x") and not started_with(master.pid, "")
        assert find_started_with(marker) == master.pid
        assert find_started_with(marker + "x") is None
    finally:
        for worker in psutil.Process(master.pid).children():
            worker.kill()
        master.kill()
        master.wait()
        if master.stdout is not None:
            master.stdout.close()
    assert find_started_with(marker) is None
