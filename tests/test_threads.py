"""Every process chooses its torch thread count: --threads, else $JQODI_THREADS, else the usable
cores divided among the processes that share them."""
from __future__ import annotations

import pytest
import torch

from jqodi.core.threads import set_threads, thread_budget, usable_cores
from jqodi.errors import JqodiError


def test_the_budget_divides_the_cores(monkeypatch):
    monkeypatch.delenv("JQODI_THREADS", raising=False)
    assert thread_budget() == usable_cores()
    assert thread_budget(processes=usable_cores() * 4) == 1
    monkeypatch.setenv("JQODI_THREADS", "3")
    assert thread_budget(processes=8) == 3
    monkeypatch.setenv("JQODI_THREADS", "-1")
    with pytest.raises(JqodiError, match="JQODI_THREADS"):
        thread_budget()


def test_set_threads_sets_torch(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("JQODI_THREADS", raising=False)
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads() == usable_cores() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_importing_jqodi_lets_openmp_threads_sleep_not_spin():
    """OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP (threads that spin at barriers made a 2-thread
    process 23x slower on a loaded 2-core machine); a policy the user set is kept."""
    import os
    import subprocess
    import sys

    code = ("import os, sys, jqodi\n"
            "assert 'torch' not in sys.modules\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ACTIVE", out.stderr
