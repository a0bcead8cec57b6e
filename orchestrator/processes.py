"""Processes of this machine, through psutil (Linux's /proc, macOS's sysctl alike): whether a pid
is alive, and finding a server by a word of its command line."""

from __future__ import annotations

# psutil is imported by each function, when first asked (30-90 ms here), not by every
# command that imports `leases`: `status` and `list` never look at a process.


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process; a killed child its parent has not reaped yet (a zombie)
    is dead for us, and one we may not inspect is alive."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, ValueError):  # ValueError: a negative pid
        return False
    except psutil.AccessDenied:
        return True


def started_with(pid: int, argument: str) -> bool:
    """Whether live process `pid` has `argument` as one word of its command line: guards
    against a recycled pid (a pid file path names one server)."""
    import psutil

    if not argument:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and argument in process.cmdline()
    except (psutil.Error, ValueError):
        return False


def find_started_with(argument: str) -> int | None:
    """The live process whose command line has `argument` as one word and whose parent's does
    not (a gunicorn master, not one of its workers), or None."""
    import psutil

    if not argument:
        return None
    matching: dict[int, int | None] = {}
    for process in psutil.process_iter(["ppid", "cmdline", "status"]):
        info = process.info  # None for what we may not read
        if info["status"] != psutil.STATUS_ZOMBIE and argument in (info["cmdline"] or ()):
            matching[process.pid] = info["ppid"]
    return next((pid for pid, parent in sorted(matching.items()) if parent not in matching), None)
