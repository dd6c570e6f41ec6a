"""A by-hand job's end device keeps its data elsewhere (docs/your-own-setup.md step 6): the job records
the writing machine's absolute data path and the path as the scenario wrote it; ``jqodi end --data
PATH`` names this device's copy, checked against the job (shape, classes), else one line, exit 2.

The job is written in one folder, the images then moved away (the writing machine's path is gone) and
the end device's data resolved from another folder; one test runs the three roles as processes on
loopback (LeNet ×0.25 at 4 bits, 30 + 6 images, random initial weights), each ended by its PID.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from jqodi.cli import main
from test_by_hand_closed_loop import run_by_hand  # tests/ is on sys.path (no __init__.py)
from test_closed_loop_runtime import scenario_file
from test_user_data import image_folder

pytestmark = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                                reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")


def _moved_job(tmp_path: Path, monkeypatch):
    """A job written in ``writer/`` for ``writer/my-images``; the images then moved to ``device/imgs``
    and the current directory ``elsewhere/``. Returns the job (a :class:`Job`) and its file."""
    from jqodi.runtime.job import Job

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    writer = tmp_path / "writer"
    writer.mkdir()
    path = scenario_file(writer, [], target=5.0)
    s = yaml.safe_load(path.read_text())
    s["data"] = {"dataset": "./my-images", "split": "./my-images", "train_size": 30, "val_size": 6,
                 "input_shape": [3, 32, 32], "num_classes": 3}
    path.write_text(yaml.safe_dump(s))
    image_folder(writer / "my-images", per_class=12, size=(32, 32), splits=True)
    monkeypatch.chdir(writer)
    assert main(["run", "s.yaml", "--write-job", "job.json", "--no-emulate", "--random-init", "--no-traces",
                 "--meter", "null", "--timeout", "60", "--policy", "static"]) == 0
    (tmp_path / "device").mkdir()
    shutil.move(str(writer / "my-images"), str(tmp_path / "device" / "imgs"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    job_path = writer / "job.json"
    return Job.from_dict(json.loads(job_path.read_text())), job_path


def test_the_end_device_reads_its_own_copy_and_is_told_what_to_pass(tmp_path, monkeypatch, capsys):
    from jqodi.errors import DataError
    from jqodi.runtime.end_data import end_device_data_for_job

    job, _ = _moved_job(tmp_path, monkeypatch)
    mine = str((tmp_path / "writer" / "my-images").resolve())
    assert (job.data.name, job.data.dataset) == (mine, mine)
    assert (job.data.name_written, job.data.dataset_written) == ("./my-images", "./my-images")
    # the job's path is not here: one line with the path as written and the flag to pass
    with pytest.raises(DataError) as e:
        end_device_data_for_job(job)
    line = str(e.value)
    assert "\n" not in line and mine in line and "'./my-images'" in line and "jqodi end --data PATH" in line
    # this device's copy, relative to this folder: the job's sizes, shape and classes
    sd = end_device_data_for_job(job, data="../device/imgs")
    assert (sd.train_size, sd.val_size, tuple(sd.input_shape), sd.num_classes) == (30, 6, (3, 32, 32), 3)
    assert sd.name == sd.dataset == str((tmp_path / "device" / "imgs").resolve())  # one folder: both
    # other data than the job's: one line each
    image_folder(tmp_path / "small", per_class=12, size=(16, 16), splits=True)
    with pytest.raises(DataError, match=r"^--data \.\./small: images are 3x16x16, the job's model expects 3x32x32"):
        end_device_data_for_job(job, data="../small")
    image_folder(tmp_path / "four", classes=("a", "b", "c", "d"), per_class=12, size=(32, 32), splits=True)
    with pytest.raises(DataError, match=r"^--data \.\./four: 4 classes, the job's model has 3 outputs"):
        end_device_data_for_job(job, data="../four")
    with pytest.raises(DataError, match=r"no such file or folder"):
        end_device_data_for_job(job, data="../nowhere")
    paper = job.replace(data=job.data.__class__(name="data1", dataset="fashion-mnist"))
    with pytest.raises(DataError, match=r"^--data \.\./device/imgs: the job's end-device data is 'data1', not a "):
        end_device_data_for_job(paper, data="../device/imgs")
    # the verb: a path that is not there is said before joining the job
    assert main(["end", "--data", "../nowhere", "--startup-timeout", "1"]) == 2
    assert capsys.readouterr().err.strip() == "jqodi end: error: --data ../nowhere: no such file or folder"


def test_a_job_written_in_one_folder_runs_with_the_end_devices_data_in_another(tmp_path, monkeypatch):
    job, job_path = _moved_job(tmp_path, monkeypatch)
    wd = tmp_path / "wd"
    run_by_hand(tmp_path, job_path, {"edges": list(job.edges)}, wd, end_args=("--data", "../device/imgs"),
                cwd=tmp_path / "elsewhere")
    rec = json.loads((wd / "record.json").read_text())
    assert rec["epochs"] and "target L_max 5" in (tmp_path / "cloud.log").read_text()
    end_log = (tmp_path / "end.log").read_text()
    assert "error" not in end_log and f"this device's copy of the job's {job.data.name}" in end_log, end_log
