"""fleet-lagrange's work budget (:class:`WorkBudget`) and its wall-clock safety cap (:class:`_Cap`).

Every phase of ``fleet-lagrange`` stops on counted work — price steps, column-generation rounds,
price vectors, HiGHS branch-and-bound nodes, exact re-plans, neighbourhood tries — never on the
clock, so the same fleet gets the same plan on a quiet or a loaded machine. ``time_limit_s`` is only
a safety cap: a phase that finds it spent stops (and a HiGHS call gets what is left as its time
limit). If the cap is hit the result may differ from run to run; the solution says so
(``extra["time_cap_hit"]`` and the phases in ``extra["time_cap_phases"]``).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import asdict, dataclass


def _now() -> float:
    """The clock the cap reads (tests replace it to make the machine look slow)."""
    return time.perf_counter()


@dataclass(frozen=True)
class WorkBudget:
    """How much work each phase of fleet-lagrange may do (counts, not seconds)."""

    price_steps: int = 30          # subgradient steps on the edge prices (phase 1)
    cg_rounds: int = 25            # column-generation rounds (phase 2)
    price_vectors: int = 40        # diversification: per edge, a ban and a dearer price, in edge order
    pricing_solves: int = 4000     # device subproblems over column generation and diversification
    master_nodes: int = 100        # HiGHS branch-and-bound nodes of the master MILP (phase 3)
    master_columns: int = 1000     # above this many columns, the master's LP, then the MILP over the devices it splits
    exact_replans: int = 20        # one-device exact MILPs in the room the others leave (phase 4)
    lns_tries: int = 8             # neighbourhood tries (groups re-planned jointly), phase 4
    lns_tries_per_device: int = 4  # ... and at most this many per device of the fleet
    lns_stall: int = 8             # ... and at most this many in a row that change nothing
    lns_nodes: int = 200           # HiGHS nodes per neighbourhood MILP
    lns_group_max: int = 12        # devices in a neighbourhood grown around a device left out

    def to_dict(self) -> dict:
        return asdict(self)


class _Cap:
    """The wall-clock safety cap: ``left()`` seconds remain; ``spent(phase)`` records a hit."""

    def __init__(self, limit_s: float):
        self.limit_s = float(limit_s)
        self.t0 = _now()
        self.phases: list[str] = []

    def elapsed(self) -> float:
        return _now() - self.t0

    def left(self) -> float:
        return self.limit_s - self.elapsed()

    def spent(self, phase: str) -> bool:
        """True (and ``phase`` recorded) when the cap is used up."""
        if self.left() > 0:
            return False
        self.hit(phase)
        return True

    def hit(self, phase: str) -> None:
        if phase not in self.phases:
            self.phases.append(phase)

    def highs_limit(self) -> float:
        """The time limit to give a HiGHS call: what is left of the cap (a little at least)."""
        return max(0.01, self.left())

    def record(self, extra: dict) -> None:
        extra["time_cap_s"] = self.limit_s
        extra["time_cap_hit"] = bool(self.phases)
        extra["time_cap_phases"] = list(self.phases)


def _time_limit_hit(res) -> bool:
    """Whether a HiGHS run (``scipy.optimize.milp``) stopped on its time limit (not on its node limit)."""
    return res.status == 1 and "time limit" in str(res.message).lower()


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


@contextlib.contextmanager
def highs_output_to_stderr():
    """Send whatever HiGHS's C++ code prints to file descriptor 1 (stdout) to stderr instead, for the
    duration of a HiGHS call. scipy asks HiGHS for no output, but some HiGHS builds print debug lines
    from inside the MIP solver (e.g. ``…transformNewIntegerFeasibleSolution tmpSolver.run();``) with
    plain printf, which Python cannot catch; on stdout they would corrupt ``jqodi plan --json``."""
    try:
        out = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        err = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, ValueError, OSError):  # no real descriptors (e.g. an embedded interpreter)
        yield
        return
    for f in (sys.stdout, sys.__stdout__):
        try:
            f.flush()
        except (AttributeError, ValueError, OSError):
            pass
    saved = os.dup(out)
    try:
        os.dup2(err, out)
        yield
    finally:
        _flush_c_stdio()  # printf's buffer (full when stdout is a pipe) goes out while fd 1 is stderr
        os.dup2(saved, out)
        os.close(saved)
