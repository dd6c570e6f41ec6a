"""docs/your-own-setup.md, tried end to end on a tiny image folder: pretrain, estimate, plan, run,
record, infer — the guide's commands, in-process (the roles as threads: --transport inprocess)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jqodi.cli import main
from test_user_data import image_folder  # tests/ is on sys.path (no __init__.py: rootdir-relative)

REPO = Path(__file__).resolve().parents[1]


def test_the_guide_end_to_end(tmp_path, monkeypatch, capsys):
    guide = (REPO / "docs/your-own-setup.md").read_text()
    for cmd in ("jqodi pretrain --dataset", "jqodi estimate --dataset", "jqodi plan my-scenario.yaml --estimates",
                "jqodi run my-scenario.yaml --estimates", "--write-job", "jqodi infer --workdir"):
        assert cmd in guide, cmd
    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    image_folder(tmp_path / "my-images", per_class=12, size=(32, 32), splits=True)

    # 2. the scenario: the CPU demo's devices, your data, no learning table
    s = yaml.safe_load((REPO / "examples/cpu-demo.yaml").read_text())
    s.pop("learning")
    s["name"], s["deadline_s"], s["target_loss"] = "mine", 1000.0, 1.2
    s["models"], s["bits"], s["baseline_bits"] = [{"name": "lenet", "width": 0.25}], [4, 8], [32]
    s["data"] = {"dataset": "./my-images", "split": "./my-images", "train_size": 30, "val_size": 6,
                 "input_shape": [3, 32, 32], "num_classes": 3}
    Path("my-scenario.yaml").write_text(yaml.safe_dump(s))
    assert main(["plan", "my-scenario.yaml"]) == 1
    assert "no learning estimate" in capsys.readouterr().out

    # 3.-5. pretrain, estimate, plan
    assert main(["pretrain", "--dataset", "./my-images", "--models", "lenet", "--quiet"]) == 0
    assert main(["estimate", "--dataset", "./my-images", "--data", "./my-images", "--train-size", "30", "--val-size", "6",
                 "--target-loss", "1.2",
                 "--models", "lenet", "--bits", "4", "8", "--probe-epochs", "2", "--out", "estimates.json",
                 "--quiet", "--store", str(tmp_path / "t.db")]) == 0
    est = json.loads(Path("estimates.json").read_text())["estimates"]
    assert {e["bits"] for e in est} == {4, 8}
    capsys.readouterr()
    assert main(["plan", "my-scenario.yaml", "--estimates", "estimates.json"]) == 0
    assert "lenet" in capsys.readouterr().out

    # 6. run (here: every role in this process), 7. the record, then inference
    assert main(["run", "my-scenario.yaml", "--estimates", "estimates.json", "--no-emulate", "--workdir",
                 "runs/mine", "--transport", "inprocess", "--no-traces", "--max-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "target L_max 1.2:" in out and "emulation off" in out and "meters:" in out
    rec = json.loads(Path("runs/mine/record.json").read_text())
    target = rec["totals"]["target"]
    # the closed loop stops at L_max: both planned epochs, or fewer because the target was reached
    assert target["target_loss"] == 1.2 and (len(rec["epochs"]) == 2 or
                                              (target["reached"] and target["epoch"] == len(rec["epochs"])))
    assert rec["job"]["data"]["name"].endswith("my-images")
    # the candidate by expected energy under the estimates' spread, said before the run and recorded
    assert "choice (expected energy)" in out and rec["solution"]["choice"]["rule"] == "expected"
    assert {r["candidate"] for r in rec["solution"]["choice"]["candidates"]} <= {"lenet@4", "lenet@8"}
    assert main(["infer", "--workdir", "runs/mine", "--requests", "2", "--no-emulate"]) == 0
    assert "--no-emulate: energy per request" in capsys.readouterr().out

    # across machines: the job file, with emulation off as the guide says
    assert main(["run", "my-scenario.yaml", "--estimates", "estimates.json", "--no-emulate",
                 "--write-job", "job.json"]) == 0
    job = json.loads(Path("job.json").read_text())
    assert job["emulation"]["enabled"] is False
    # the data paths as the end device reads them: absolute, from the scenario file's folder (the guide says so)
    mine = str((tmp_path / "my-images").resolve())
    assert (job["data"]["name"], job["data"]["dataset"]) == (mine, mine)
    assert (job["data"]["name_written"], job["data"]["dataset_written"]) == ("./my-images", "./my-images")
    assert "jqodi end --host CLOUD_ADDRESS --token-file job.token --data" in guide  # the copy elsewhere


@pytest.fixture(autouse=True)
def _no_plugins(monkeypatch):
    monkeypatch.delenv("JQODI_PLUGINS", raising=False)


def test_the_user_docs_need_no_file_outside_the_repository():
    """README and docs/ cite only what a clone holds (the design contract is docs/interfaces.md)."""
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        assert "DESIGN.md" not in path.read_text(), path
    text = (REPO / "docs/interfaces.md").read_text()
    assert "## The planning instance (contract)" in text and "## Runtime protocol" in text
