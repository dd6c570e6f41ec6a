"""Scenario files: the shipped examples load, and malformed ones fail with one line naming the field."""
import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from jqodi.errors import ScenarioError
from jqodi.core.scenario import default_scenario_path, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[1]
DATA1 = ROOT / "examples" / "paper-data1.yaml"
DATA2 = ROOT / "examples" / "paper-data2.yaml"
BASE = yaml.safe_load(DATA1.read_text())
# the spec-sheet device form (cpu-demo's devices = the paper testbed before device files): the
# malformed cases below edit its fields; the device-file form is tests/test_device_model.py's
_SPEC = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
BASE.update(cloud=_SPEC["cloud"], edges=_SPEC["edges"], end_device=_SPEC["end_device"])


def test_examples_load_with_the_papers_settings():
    d1, d2 = load_scenario(DATA1), load_scenario(DATA2)
    assert (d1.deadline_s, d1.data.train_size, d1.data.val_size) == (180.0, 2000, 500)
    assert (d2.deadline_s, d2.data.train_size, d2.data.val_size) == (2000.0, 5000, 1000)
    for s in (d1, d2):
        assert [m.name for m in s.models] == ["lenet", "vgg", "resnet20"]
        assert s.bits == [2, 4, 6, 8] and s.baseline_bits == [1, 32]
        assert [e.name for e in s.edges] == ["rtx3090", "rtx4090"]
        # the packaged device files, busy power within the ratings of Tables II-IV, idle below busy
        assert [d.device_ref for d in (s.end_device, s.cloud, *s.edges)] == ["pi5", "a100", "rtx3090", "rtx4090"]
        for d, rated in ((s.end_device, 12), (s.cloud, 400), (s.edges[0], 350), (s.edges[1], 450)):
            dev = d.device()
            assert 0 < dev.busy_power_w <= rated and 0 <= dev.idle_power_w < dev.busy_power_w
        # a learning row for every (model, bits) candidate
        assert {(r.model, r.bits) for r in s.learning} == {(m.name, b) for m in s.models for b in s.all_bits}
    # Table VI spot checks (K^exp, K^rob) and the paper's infinity
    rows = {(r.model, r.bits): r for r in d1.learning}
    assert (rows["lenet", 6].epochs_expected, rows["lenet", 6].epochs_robust) == (33, 36)
    assert (rows["vgg", 8].epochs_expected, rows["vgg", 8].epochs_robust) == (29, 31)
    assert rows["resnet20", 2].epochs_expected is None
    rows2 = {(r.model, r.bits): r for r in d2.learning}
    assert (rows2["resnet20", 8].epochs_expected, rows2["resnet20", 8].epochs_robust) == (50, 52)


def test_default_scenario_is_the_packaged_data1_copy():
    p = default_scenario_path()
    assert p.name == "paper-data1.yaml" and p.is_file()
    assert p.read_text() == DATA1.read_text(), "src/jqodi/data/paper-data1.yaml must equal examples/"
    assert load_scenario(p).name == "paper-data1"
    assert (p.parent / "paper-data2.yaml").read_text() == DATA2.read_text()


def test_alternative_obs4_scenarios_by_name():
    """The alternative Observation-4 testbed's packaged scenarios (``jqodi:paper-data{1,2}-obs4``)
    differ from the paper ones only in their device files (src/jqodi/devices/obs4/, read relative
    to the scenario's folder); a CLI's ``Path(args.scenario)`` names them too."""
    alt = load_scenario("jqodi:paper-data1-obs4")
    base = load_scenario(DATA1)
    assert alt.name == "paper-data1-obs4" and alt.deadline_s == base.deadline_s and alt.learning == base.learning
    assert alt.edges[0].end_link.rate_bps == base.edges[0].end_link.rate_bps
    assert alt.end_device.device().busy_power_w != base.end_device.device().busy_power_w
    assert load_scenario(Path("jqodi:paper-data2-obs4")).deadline_s == 2000
    with pytest.raises(ScenarioError, match="no packaged scenario .*jqodi:paper-data1-obs4"):
        load_scenario("jqodi:../devices/obs4/pi5")


def test_derived_quantities():
    s = load_scenario(DATA1)
    e = s.edges[0]
    sigma = 10 ** (16.2016 / 10)  # the Pi 5 radio's peak PHY rate, 433.3 Mbit/s (665 at 25 dB until 2026-12-01)
    assert e.end_link.rate_bps == pytest.approx(80e6 * math.log2(1 + sigma))
    assert e.end_link.rate_bps == pytest.approx(433.3e6, rel=1e-5)
    assert e.end_link.joules_per_bit == pytest.approx(1.0 / e.end_link.rate_bps)
    assert e.cloud_link.joules_per_bit == pytest.approx(2.0 / 1e9)
    from jqodi.core.device_model import load_device_file

    f = load_device_file("rtx3090")  # the paper testbed's devices are device files now
    assert e.speed_flops == pytest.approx(f.flops)
    assert e.joules_per_flop == pytest.approx(f.busy_power_w / f.flops)
    assert e.memory_bytes == 24 * 2**30 and s.end_device.memory_bytes == 8 * 2**30
    assert s.runtime.host == "127.0.0.1" and s.runtime.time_dilation == "auto"
    assert s.training.wire_bits("same", 6) == 6 and s.training.wire_bits(8, 2) == 8


def test_system_arrays_follow_the_scenario():
    from jqodi.core.system import System, db_to_linear, shannon_rate_bps

    assert db_to_linear(20) == pytest.approx(100.0)
    assert shannon_rate_bps(1e6, 3) == pytest.approx(2e6)
    s = load_scenario(DATA1)
    sysm = System.from_scenario(s)
    assert sysm.edge_names == ["rtx3090", "rtx4090"]
    assert list(sysm.edge_end_rate_bps) == pytest.approx([e.end_link.rate_bps for e in s.edges])
    assert list(sysm.cloud_edge_j_per_bit) == pytest.approx([2e-9, 2e-9])
    from jqodi.core.device_model import load_device_file

    assert sysm.end.flops == pytest.approx(load_device_file("pi5").flops) and sysm.edge_down_reason == (None, None)


def test_defaults_for_optional_sections():
    d = copy.deepcopy(BASE)
    for k in ("runtime", "training", "learning", "baseline_bits", "cost_model", "name", "description"):
        d.pop(k)
    s = parse_scenario(d)
    assert s.cost_model == "extended" and s.learning == [] and s.baseline_bits == []
    assert s.runtime.port is None and s.training.batch_size == 64  # None: 'jqodi run' takes a free port


def _set(path, value):
    def f(d):
        *head, last = path
        for k in head:
            d = d[k]
        if value is _DEL:
            del d[last]
        else:
            d[last] = value
    return f


_DEL = object()


def _dup_edge(d):
    d["edges"].append(copy.deepcopy(d["edges"][0]))


def _both_energy(d):
    d["end_device"]["energy_per_flop_j"] = 1e-9


def _dup_learning(d):
    d["learning"].append(copy.deepcopy(d["learning"][0]))


MALFORMED = [
    (_set(["deadline_s"], -5), "deadline_s: "),
    (_set(["deadline_s"], "soon"), "deadline_s: "),
    (_set(["target_loss"], _DEL), "target_loss: missing field"),
    (_set(["target_loss"], 0), "target_loss: "),
    (_set(["cost_model"], "magic"), "cost_model: "),
    (_set(["models", 0, "name"], "alexnet"), "models[0].name: unknown model 'alexnet'"),
    (_set(["models", 1, "width"], -1), "models[1].width: "),
    (_set(["models"], []), "models: "),
    (_set(["bits"], [4, 9]), "bits[1]: bit-width 9"),
    (_set(["bits"], [4, 4]), "bits: bit-widths must not repeat"),
    (_set(["baseline_bits"], [8]), "baseline_bits: bit-width 8 is already in 'bits'"),
    (_set(["edges", 0, "end_link", "bandwidth_hz"], 0), "edges[0].end_link.bandwidth_hz: "),
    (_set(["edges", 0, "end_link", "bandwidth_hz"], -20e6), "edges[0].end_link.bandwidth_hz: "),
    (_set(["edges", 1, "cloud_link", "rate_bps"], -1), "edges[1].cloud_link.rate_bps: "),
    (_set(["edges", 0, "end_link", "snr_db"], _DEL), "edges[0].end_link: give exactly one of 'snr_db'"),
    (_set(["edges", 0, "end_link", "snr_db"], 500), "edges[0].end_link: snr_db must be within"),
    (_set(["edges", 0, "colour"], "red"), "edges[0].colour: unknown field"),
    (_set(["edges"], []), "edges: "),
    (_dup_edge, "edges[2].name: edge server 'rtx3090' is listed twice"),
    (_set(["end_device", "peak_flops"], 0), "end_device.peak_flops: "),
    (_set(["end_device", "peak_flops"], _DEL), "end_device: give the speed"),
    (_both_energy, "end_device: give exactly one of 'energy_per_flop_j' and 'busy_power_w'"),
    (_set(["cloud", "utilization"], 1.5), "cloud.utilization: "),
    (_set(["cloud", "memory_gib"], "lots"), "cloud.memory_gib: "),
    (_set(["edges", 0, "bit_speedup"], {9: 2.0}), "edges[0].bit_speedup: bit-width 9 is not one of"),
    (_set(["end_device", "bit_speedup"], {"eight": 2.0}), "end_device.bit_speedup: key 'eight': Input should be a valid integer"),
    (_set(["data", "input_shape"], [3, 32, 32, 1]), "data.input_shape: expected 3 sizes [C, H, W], got 4"),
    (_set(["edges", 1, "name"], "pi5"), "edges[1].name: 'pi5' is already the name of end_device.name"),
    (_set(["end_device", "name"], "a100"), "end_device.name: 'a100' is already the name of cloud.name"),
    (_set(["models", 1], 7), "models[1]: Input should be a valid dictionary"),
    (_set(["end_device", "name"], "π5"), "end_device.name: names use ASCII letters, digits, '_', '.' and '-'"),
    (_set(["edges", 0, "name"], "-x"), "edges[0].name: names use ASCII letters"),
    (_set(["data", "train_size"], 0), "data.train_size: "),
    (_set(["data", "input_shape"], [3, 32]), "data.input_shape"),
    (_set(["data", "dataset"], "imagenet"), "data.dataset: "),
    (_set(["data"], _DEL), "data: missing field"),
    (_set(["learning", 0, "model"], "alexnet"), "learning[0].model: 'alexnet' is not one of the scenario's models"),
    (_set(["learning", 0, "bits"], 3), "learning[0].bits: 3 is not one of the scenario's bit-widths"),
    (_set(["learning", 1, "epochs_robust"], 10), "learning[1]: epochs_robust (10) must be ≥ epochs_expected"),
    (_set(["learning", 1, "epochs_robust"], None), "learning[1]: epochs_expected and epochs_robust"),
    (_set(["learning", 0, "gamma"], _DEL), "learning[0].gamma: missing field"),
    (_dup_learning, "learning[18]: duplicate row"),
    (_set(["training", "act_bits"], 12), "training.act_bits"),
    (_set(["training", "batch_size"], 2.5), "training.batch_size: "),
    (_set(["runtime", "port"], 70000), "runtime.port: "),
    (_set(["runtime", "time_dilation"], 0.5), "runtime.time_dilation"),
    (_set(["runtime", "emulate"], "perhaps"), "runtime.emulate: "),
    (_set(["surprise"], 1), "surprise: unknown field"),
    (_set(["deadline_s"], True), "deadline_s: expected a number, got true"),
    (_set(["bits"], [False, 4]), "bits[0]: expected a number, got false"),
]


@pytest.mark.parametrize("mutate, expected", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_scenarios_fail_with_one_line_naming_the_field(mutate, expected):
    d = copy.deepcopy(BASE)
    mutate(d)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(d, "bad.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("bad.yaml: "), msg
    assert expected in msg, msg


def test_at_least_twenty_malformed_cases():
    assert len(MALFORMED) >= 20


@pytest.mark.parametrize("text, expected", [
    ("deadline_s: [1, 2\n", r"^.*bad\.yaml: \(yaml\): line \d+, column \d+: "),
    ("", r"bad\.yaml: \(top level\): expected a mapping of fields, got an empty document"),
    ("- 1\n- 2\n", r"bad\.yaml: \(top level\): expected a mapping of fields, got list"),
    ("a: b\n\tc: d\n", r"bad\.yaml: \(yaml\): "),
    ("{1: 2}\n", r"bad\.yaml: 1: field names must be strings"),
])
def test_malformed_yaml_text(tmp_path, text, expected):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    assert "\n" not in str(err.value)
    assert re.search(expected, str(err.value)), str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ScenarioError, match="nope.yaml: file not found"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ScenarioError, match="bin.yaml: unreadable"):
        load_scenario(p)


def test_numbers_written_as_strings_are_read():
    d = copy.deepcopy(BASE)
    d["cloud"]["peak_flops"] = "19.5e12"  # YAML 1.1 reads 1e12 (no dot) as a string
    assert parse_scenario(d).cloud.peak_flops == 19.5e12


def test_user_registered_models_are_accepted():
    import torch

    from jqodi.core.zoo import register_model

    register_model("tiny-scn", lambda s, n, w: [("f", torch.nn.Flatten()),
                                                 ("fc", torch.nn.Linear(s[0] * s[1] * s[2], n))], replace=True)
    d = copy.deepcopy(BASE)
    d["models"].append({"name": "tiny-scn"})
    assert parse_scenario(d).models[-1].name == "tiny-scn"


def test_models_may_be_listed_by_name():
    d = copy.deepcopy(BASE)
    d["models"] = ["lenet", {"name": "vgg", "width": 0.5}]
    d["learning"] = [r for r in d["learning"] if r["model"] != "resnet20"]
    s = parse_scenario(d)
    assert [(m.name, m.width) for m in s.models] == [("lenet", 1.0), ("vgg", 0.5)]


def test_the_scenarios_runtime_port_is_the_one_jqodi_run_uses(monkeypatch, tmp_path):
    """runtime.port reaches the launcher (None: a free port); --port (run_plan's port) wins."""
    from jqodi.core.costs import compile_instance
    from jqodi.planner import solve
    from jqodi.runtime import launch

    seen = []

    def fake_run_job(job, **kw):
        seen.append(kw["port"])
        raise RuntimeError("stop here")

    monkeypatch.setattr(launch, "run_job", fake_run_job)
    sc = load_scenario(DATA1)
    sol = solve(compile_instance(sc), "jqodi")
    for scenario_port, flag, expected in [(None, None, None), (29611, None, 29611), (29611, 29612, 29612)]:
        s = sc.model_copy(update={"runtime": sc.runtime.model_copy(update={"port": scenario_port})})
        with pytest.raises(RuntimeError, match="stop here"):
            # a fixed dilation: the automatic one times the host on the plan's model first (≈ 15 s), which
            # has nothing to do with the port (tests/test_auto_dilation.py tests it)
            launch.run_plan(s, sol, port=flag, pretrained={"source": "random"}, workdir=tmp_path, dilation=10.0)
        assert seen[-1] == expected


def test_relative_data_paths_are_read_from_the_scenario_files_folder(tmp_path, monkeypatch, capsys):
    """Like device and trace files: ``split``, ``dataset`` (paths) and ``data_dir`` relative to the file;
    a path found only from the current directory still works, with a one-line warning saying how to write it."""
    import jqodi.core.scenario as scenario_mod

    monkeypatch.setattr(scenario_mod, "_WARNED", set())
    (tmp_path / "proj" / "my-images").mkdir(parents=True)
    (tmp_path / "cwd" / "old-images").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    d = copy.deepcopy(BASE)
    d["data"] = {**d["data"], "dataset": "./my-images", "split": "my-images/", "data_dir": "files"}
    (tmp_path / "proj" / "s.yaml").write_text(yaml.safe_dump(d))
    s = load_scenario("../proj/s.yaml")
    proj = (tmp_path / "proj").resolve()
    assert (s.data.dataset, s.data.split, s.data.data_dir) == (
        str(proj / "my-images"), str(proj / "my-images"), str(proj / "files"))  # 'files' exists nowhere yet
    assert capsys.readouterr().err == ""
    assert s.with_changes(deadline_s=5.0).data.split == str(proj / "my-images")  # kept absolute
    # only the current directory has it: taken from there, one warning line naming the fix
    d["data"] = {**d["data"], "split": "./old-images"}
    (tmp_path / "proj" / "old.yaml").write_text(yaml.safe_dump(d))
    for _ in range(2):
        s = load_scenario("../proj/old.yaml")
        assert s.data.split == str((tmp_path / "cwd" / "old-images").resolve())
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ../proj/old.yaml: data.split: './old-images'")
    assert "'../cwd/old-images'" in err[0]
    # absolute paths and the named datasets are left as written; a mapping without a file keeps its paths
    d["data"] = {**d["data"], "dataset": "cifar10", "split": str(tmp_path / "cwd" / "old-images"), "data_dir": None}
    (tmp_path / "proj" / "abs.yaml").write_text(yaml.safe_dump(d))
    s = load_scenario(tmp_path / "proj" / "abs.yaml")
    assert (s.data.dataset, s.data.split, s.data.data_dir) == ("cifar10", str(tmp_path / "cwd" / "old-images"), None)
    assert parse_scenario({**d, "data": {**d["data"], "split": "./x"}}).data.split == "./x"


def test_odd_data_paths_of_a_scenario_file_plan_or_fail_in_one_line(tmp_path, capsys):
    """A data path the file system cannot look up (too long) does not stop a plan (the data is checked
    when a run loads it); '~user' of no such user is one line naming the field, exit 2, not a traceback."""
    from jqodi.cli import main

    d = copy.deepcopy(BASE)
    long_name = "./" + "x" * 300 + "/imgs"
    d["data"] = {**d["data"], "split": long_name}
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(d))
    assert load_scenario(tmp_path / "long.yaml").data.split == str(tmp_path.resolve() / ("x" * 300) / "imgs")
    d["data"] = {**d["data"], "split": "~no-such-user-jqodi/imgs"}
    (tmp_path / "nouser.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ScenarioError, match=r"nouser\.yaml: data\.split: no home folder for '~no-such-user-jqodi'"):
        load_scenario(tmp_path / "nouser.yaml")
    assert main(["plan", str(tmp_path / "nouser.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data.split: no home folder" in err


def test_a_linked_scenario_file_reads_its_device_data_and_traces_beside_the_file_it_links_to(tmp_path, monkeypatch):
    """'device:', data and trace paths are all read from the folder of the file a link points to (one rule
    for the three; it also lets 'jqodi plan /dev/stdin < s.yaml' find them beside s.yaml); the guide says so."""
    from jqodi.core.device_model import load_device_file

    (tmp_path / "shared" / "my-images").mkdir(parents=True)
    (tmp_path / "mine" / "my-images").mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    box = load_device_file("pi5").model_dump(mode="json", exclude_none=True)
    (tmp_path / "shared" / "box.yaml").write_text(yaml.safe_dump(box))
    d = copy.deepcopy(BASE)
    d["end_device"] = {"name": d["end_device"]["name"], "device": "box.yaml"}
    d["data"] = {**d["data"], "split": "./my-images"}
    (tmp_path / "shared" / "s.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "mine" / "s.yaml").symlink_to(tmp_path / "shared" / "s.yaml")
    monkeypatch.chdir(tmp_path / "cwd")
    s = load_scenario("../mine/s.yaml")
    shared = (tmp_path / "shared").resolve()
    assert s.end_device.device_ref == str(shared / "box.yaml") and s.data.split == str(shared / "my-images")
    assert s._source_dir == shared
    assert "for a link to a scenario file, beside the file it links to" in " ".join(
        (Path(__file__).resolve().parents[1] / "docs" / "your-own-setup.md").read_text().split())


def test_packaged_scenarios_by_name(capsys):
    """``jqodi:NAME`` is the scenario shipped with the package (as ``jqodi:traces/X`` is a packaged trace)."""
    from jqodi.cli import main
    from jqodi.core.scenario import packaged_scenarios

    assert {"cpu-demo", "paper-data1", "paper-data2"} <= set(packaged_scenarios())
    s = load_scenario("jqodi:paper-data1")
    assert s.model_dump() == load_scenario(default_scenario_path()).model_dump()
    assert load_scenario("jqodi:cpu-demo.yaml").name == "cpu-demo"
    with pytest.raises(ScenarioError, match=r"^jqodi:nope: no packaged scenario 'nope' \(packaged: .*jqodi:cpu-demo"):
        load_scenario("jqodi:nope")
    assert main(["plan", "jqodi:cpu-demo"]) == 0
    assert "model         lenet" in capsys.readouterr().out
