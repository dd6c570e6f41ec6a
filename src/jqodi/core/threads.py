"""How many torch threads a process uses: chosen, not left to torch's default.

torch starts one intra-op thread per core in every process. A job's cloud, edge and end processes
on one machine (``jqodi run``, the demo), or a learning verb beside another busy process, would
then run more threads than there are cores, and OpenMP threads that wait for each other on an
oversubscribed machine slow everything down many times over. So every process sets its count:

* ``--threads N`` (the learning verbs, the role verbs) wins;
* else ``$JQODI_THREADS`` (the launcher of ``jqodi run`` sets it to the usable cores divided by
  the number of role processes it starts, at least 1);
* else every usable core (``os.sched_getaffinity``): a process alone on its machine, e.g. a role
  started by hand on its own device.

Counting our own threads is not enough on a machine shared with *other* work: torch's OpenMP
threads busy-wait (spin) at every barrier, so when one of a process's threads is descheduled the
others burn their time slices spinning for it. On this project's 2-core VM under load (load average
≈ 17), 100 LeNet training steps took 131 s with 2 threads against 5.7 s with 1 thread; with
``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) the same 2 threads took 3.95 s. So importing
jqodi sets ``OMP_WAIT_POLICY=PASSIVE`` (:func:`calm_openmp`) unless the environment already says
otherwise; it acts when OpenMP starts, i.e. for every process that imports jqodi before torch (every
``jqodi`` command, and the role processes, which inherit the variable).
"""
from __future__ import annotations

import os

__all__ = ["usable_cores", "thread_budget", "set_threads", "calm_openmp"]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def thread_budget(processes: int = 1) -> int:
    """Threads for one of ``processes`` processes sharing this machine: ``$JQODI_THREADS`` if set,
    else the usable cores divided among them (≥ 1)."""
    env = os.environ.get("JQODI_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n >= 1:
            return n
        from jqodi.errors import JqodiError

        raise JqodiError(f"JQODI_THREADS: must be an integer ≥ 1, got {env!r}")
    return max(1, usable_cores() // max(1, processes))


def set_threads(requested: int | None = None, *, processes: int = 1) -> int:
    """Set torch's intra-op thread count (``requested``, else :func:`thread_budget`); returns it."""
    import torch

    n = int(requested) if requested else thread_budget(processes)
    torch.set_num_threads(n)
    return n


def calm_openmp(environ=None) -> None:
    """Let OpenMP threads sleep rather than spin while they wait (``OMP_WAIT_POLICY=PASSIVE``), unless
    the environment sets a policy already. Takes effect in a process that has not loaded OpenMP yet
    (torch not imported) and in every process started from it."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
