"""User-facing fixes from the last review, each pinned by a test that failed before it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers (no __init__.py)

from jqodi.app.controller import ClosedLoopController  # noqa: E402
from jqodi.errors import JqodiError  # noqa: E402
from jqodi.planner import solve  # noqa: E402
from test_controller import make_table  # noqa: E402


# -- 1. a controller spec's options name only options --------------------------------------------------
@pytest.mark.parametrize("key,value,message", [
    ("table", {}, r"^controller spec: options\.table is not an option"),
    ("solution", {}, r"^controller spec: options\.solution is not an option"),
    ("edges_down", ["fast"], r"^controller spec: options\.edges_down is not an option"),
    ("threshold", "high", r"^controller spec: options\.threshold must be a number, got 'high'$"),
    ("hedge", 1, r"^controller spec: options\.hedge must be true or false, got 1$"),
    ("prior_epochs", "9", r"^controller spec: options\.prior_epochs must be a number or null"),
    ("spread_condition", 3, r"^controller spec: options\.spread_condition must be a string, got 3$"),
])
def test_a_controller_spec_with_a_bad_option_is_one_line_naming_it(key, value, message):
    tab = make_table()
    spec = json.loads(json.dumps(ClosedLoopController(tab, solve(tab.instance, "optimal")).to_spec()))
    spec["options"][key] = value
    with pytest.raises(JqodiError, match=message):
        ClosedLoopController.from_spec(spec)
    spec["options"].pop(key)
    spec["options"]["prior_epochs"] = None  # null is the default: still read
    assert ClosedLoopController.from_spec(spec).prior_epochs is None
    spec["edges_down"] = "fast"
    with pytest.raises(JqodiError, match=r"^controller spec: edges_down must be a list of edge names"):
        ClosedLoopController.from_spec(spec)


def test_jqodi_cloud_with_a_bad_controller_file_exits_2_in_one_line(tmp_path, capsys):
    from jqodi.cli import main

    tab = make_table()
    spec = ClosedLoopController(tab, solve(tab.instance, "optimal")).to_spec()
    spec["options"]["table"] = spec["table"]
    (tmp_path / "ctl.json").write_text(json.dumps(spec))
    job = tmp_path / "job.json"
    job.write_text(json.dumps(_a_job_dict()))
    rc = main(["cloud", "--job", str(job), "--controller", str(tmp_path / "ctl.json"),
               "--workdir", str(tmp_path / "wd"), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "options.table is not an option" in err, err


def _a_job_dict() -> dict:
    """The smallest job the cloud reads: LeNet at 8 bits, one epoch on the edge ``fast``."""
    return {"model": "lenet", "bits": 8, "schedule": [{"edge": "fast", "cut": 1, "epochs": 1}]}
