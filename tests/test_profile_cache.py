"""Stored model profiles: the shipped file is what the generator writes, stale entries are
recomputed, and the planning commands never import torch when profiles are stored."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jqodi.core import profile as profile_mod
from jqodi.core import profile_cache
from jqodi.core.profile import ModelProfile, profile_model, profile_named_model
from jqodi.core.zoo import build_model

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "src" / "jqodi" / "scenarios" / "paper-data1.yaml"


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """An empty ``$JQODI_HOME`` and an empty in-process profile cache."""
    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(profile_mod, "_CACHE", {})
    return tmp_path / "home"


def _generator():
    return load_script("scripts/build_zoo_profiles.py", "build_zoo_profiles")


def test_shipped_profiles_are_what_the_generator_writes_now():
    """Every shipped entry equals a fresh torch profile with the current fingerprint; run
    ``python scripts/build_zoo_profiles.py`` when this fails after changing a model."""
    shipped = json.loads(profile_cache.SHIPPED_PATH.read_text())
    fresh = _generator().build()
    assert shipped["format"] == fresh["format"] == profile_cache.FORMAT
    assert shipped["entries"] == fresh["entries"]
    keys = {(e["model"], tuple(e["input_shape"]), e["width"]) for e in shipped["entries"]}
    assert {("lenet", (3, 32, 32), 1.0), ("vgg", (3, 32, 32), 1.0), ("resnet20", (3, 32, 32), 1.0),
            ("lenet", (1, 28, 28), 0.25)} <= keys


def test_a_shipped_profile_matches_profiling_the_model_directly():
    entry = next(e for e in json.loads(profile_cache.SHIPPED_PATH.read_text())["entries"]
                 if e["model"] == "lenet" and e["input_shape"] == [1, 28, 28] and e["width"] == 0.25)
    direct = profile_model(build_model("lenet", (1, 28, 28), 10, 0.25, seed=0))
    assert ModelProfile.from_dict(entry["profile"]) == direct
    assert entry["fingerprint"] == profile_cache.model_fingerprint("lenet")


def test_fingerprints_from_the_source_equal_those_from_the_registry():
    """Without torch the packaged models' fingerprints come from the zoo's source (or the
    shipped record of it); with the zoo imported, from the registered builders."""
    static = profile_cache.packaged_fingerprints()
    assert set(static) >= {"lenet", "vgg", "resnet20"}
    assert static == {name: profile_cache.model_fingerprint(name) for name in static}
    assert static == {name: profile_cache._packaged_fingerprint(name) for name in static}


def test_profile_is_stored_reused_and_refreshed(home):
    first = profile_named_model("lenet", (1, 28, 28), 10, 0.5)
    stored = list((home / "profiles").glob("lenet-*.json"))
    assert len(stored) == 1
    entry = json.loads(stored[0].read_text())
    assert entry["fingerprint"] == profile_cache.model_fingerprint("lenet")
    assert ModelProfile.from_dict(entry["profile"]) == first
    # a stored entry with the current fingerprint is what a new process would read
    entry["profile"]["blocks"][0]["flops"] += 1
    stored[0].write_text(json.dumps(entry))
    profile_mod._CACHE.clear()
    assert profile_named_model("lenet", (1, 28, 28), 10, 0.5).blocks[0].flops == first.blocks[0].flops + 1
    # --refresh recomputes and overwrites it
    assert profile_named_model("lenet", (1, 28, 28), 10, 0.5, refresh=True) == first
    assert ModelProfile.from_dict(json.loads(stored[0].read_text())["profile"]) == first


def test_a_stale_entry_is_recomputed_and_overwritten(home):
    first = profile_named_model("lenet", (1, 28, 28), 10, 0.5)
    path = next((home / "profiles").glob("lenet-*.json"))
    entry = json.loads(path.read_text())
    entry["fingerprint"] = "0" * 64  # made by another version of the model
    entry["profile"]["blocks"][0]["flops"] += 1
    path.write_text(json.dumps(entry))
    profile_mod._CACHE.clear()
    assert profile_named_model("lenet", (1, 28, 28), 10, 0.5) == first
    assert json.loads(path.read_text())["fingerprint"] == profile_cache.model_fingerprint("lenet")


def test_fingerprint_follows_the_builder_and_what_it_uses_only(tmp_path):
    src = textwrap.dedent('''
        WIDTH = 4

        def helper(c):
            return c * WIDTH

        def unrelated():
            return 1

        def build(shape, classes, width):
            return helper(shape[0])
    ''')
    path = tmp_path / "m.py"

    def fp(text):
        path.write_text(text)
        profile_cache._parsed.clear()
        profile_cache._fingerprints.clear()
        return profile_cache.source_fingerprint(path, ["build"])

    base = fp(src)
    assert base is not None
    assert fp(src.replace("return 1", "return 2")) == base          # not used by the builder
    assert fp(src + "\n# a comment\n") == base
    assert fp(src.replace("WIDTH = 4", "WIDTH = 5")) != base        # a constant it uses
    assert fp(src.replace("c * WIDTH", "c + WIDTH")) != base        # a helper it calls
    assert fp(src.replace("build(", "make(")) is None               # no such builder


def test_a_model_without_source_is_never_stored(home):
    from torch import nn

    from jqodi.core.zoo import register_model

    register_model("cache-lambda", lambda shape, classes, width: [
        ("flat", nn.Flatten()), ("fc", nn.Linear(shape[0] * shape[1] * shape[2], classes))], replace=True)
    assert profile_cache.model_fingerprint("cache-lambda") is None
    assert profile_named_model("cache-lambda", (1, 4, 4), 3).params == 16 * 3 + 3
    assert not (home / "profiles").exists()


# --- no torch --------------------------------------------------------------------------------------

_PROBE = textwrap.dedent('''
    import json, sys
    from jqodi.cli import main
    out, argv = sys.argv[1], sys.argv[2:]
    try:
        rc = main(argv)
    except SystemExit as e:  # --help
        rc = e.code
    with open(out, "w") as f:
        json.dump({"rc": rc, "torch": "torch" in sys.modules}, f)
''')


def _run_cli(args: list[str], home: Path, tmp_path: Path) -> dict:
    out = tmp_path / "probe.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "JQODI_HOME": str(home), "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_planning_commands_do_not_import_torch(tmp_path):
    home = tmp_path / "home"  # empty: a fresh install plans the packaged scenarios from the shipped profiles
    instance = tmp_path / "inst.json"
    for args in (["instance", str(SCENARIO), "--out", str(instance)],
                 ["instance", "--json"],
                 ["plan", "--instance", str(instance), "--json"],
                 ["plan", str(SCENARIO)],
                 ["profile", "--model", "vgg"],
                 ["plan", "--help"]):
        res = _run_cli(args, home, tmp_path)
        assert res["rc"] == 0 and res["torch"] is False, args


def test_planning_with_an_estimates_file_does_not_import_torch(tmp_path):
    """docs/your-own-setup.md step 5: ``jqodi plan SCENARIO --estimates FILE``. Checking that the file
    describes the scenario's data names datasets, and that needs no torch (it cost ≈ 1 s of CPU)."""
    from jqodi.app.estimates import scenario_provenance
    from jqodi.core.estimates import LearningEstimate, save_estimates
    from jqodi.core.scenario import load_scenario

    sc = load_scenario(SCENARIO)
    rows = [LearningEstimate(model=r.model, bits=r.bits, base_loss=r.base_loss, gamma=r.gamma,
                             epochs_expected=r.epochs_expected, epochs_robust=r.epochs_robust,
                             target_loss=sc.target_loss,
                             provenance={k: v for k, v in scenario_provenance(sc, r.model).items()
                                         if k != "target_loss"})
            for r in sc.learning if r.model == "lenet"]
    save_estimates(tmp_path / "est.json", rows)
    for verb in ("plan", "instance"):
        res = _run_cli([verb, str(SCENARIO), "--estimates", str(tmp_path / "est.json")], tmp_path / "home", tmp_path)
        assert res == {"rc": 0, "torch": False}, verb


def test_plan_scenario_imports_torch_once_then_never(tmp_path):
    home = tmp_path / "home"
    other = tmp_path / "narrow.yaml"  # widths nobody has profiled: the first plan profiles them (torch)
    other.write_text(SCENARIO.read_text().replace("width: 1.0", "width: 0.75"))
    assert _run_cli(["plan", str(other)], home, tmp_path) == {"rc": 0, "torch": True}
    assert len(list((home / "profiles").glob("*.json"))) == 3
    assert _run_cli(["plan", str(other)], home, tmp_path) == {"rc": 0, "torch": False}


def test_a_one_time_profiling_is_announced_once(tmp_path, monkeypatch, capsys):
    """Planning widths nobody has profiled says so on stderr (a one-time cost); the next plan does not."""
    from jqodi.cli import main

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    other = tmp_path / "narrow.yaml"
    other.write_text(SCENARIO.read_text().replace("width: 1.0", "width: 0.6"))
    main(["plan", str(other)])
    err = capsys.readouterr().err
    assert "one-time: profiling" in err and "×0.6" in err and "$JQODI_HOME/profiles" in err
    import jqodi.core.profile as profile

    profile._CACHE.clear()  # a new process would start empty; the stored profiles remain
    main(["plan", str(other)])
    assert "one-time" not in capsys.readouterr().err
