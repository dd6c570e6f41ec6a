"""Property-based fuzzing: no mutation of a scenario ends in anything but a one-line ScenarioError."""
import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jqodi.errors import ScenarioError
from jqodi.core.scenario import Scenario, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((ROOT / "examples" / "paper-data1.yaml").read_text())
# the spec-sheet device form (cpu-demo's devices = the paper testbed before device files):
# the fuzzed fields include every way of giving v and ε
_SPEC = yaml.safe_load((ROOT / "examples" / "cpu-demo.yaml").read_text())
BASE.update(cloud=_SPEC["cloud"], edges=_SPEC["edges"], end_device=_SPEC["end_device"])

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12) | st.sampled_from(["same", "auto", "1e9", "-1", "lenet", "paper", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=8,
)


def _paths(node, prefix=()):
    """Every path to a value in the nested dict/list."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw):
    d = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = d
        try:
            for k in path[:-1]:
                parent = parent[k]
            op = draw(st.sampled_from(["replace", "delete", "add"]))
            if op == "replace":
                parent[path[-1]] = draw(junk)
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(junk)
            else:
                parent.append(draw(junk))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation changed the shape: skip
    return d


def _check(call):
    try:
        result = call()
    except ScenarioError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg
        return None
    assert isinstance(result, Scenario)
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_dicts_only_raise_scenario_errors(d):
    _check(lambda: parse_scenario(d, "fuzz.yaml"))


@settings(max_examples=60, deadline=None)
@given(junk)
def test_arbitrary_documents_only_raise_scenario_errors(doc):
    _check(lambda: parse_scenario(doc, "fuzz.yaml"))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_mangled_yaml_text_only_raises_scenario_errors(tmp_path_factory, data):
    text = (ROOT / "examples" / "paper-data1.yaml").read_text()
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "garble", "indent", "truncate"]))
        if op == "drop":
            lines.pop(i)
        elif op == "garble":
            lines[i] = data.draw(st.text(max_size=30))
        elif op == "indent":
            lines[i] = data.draw(st.sampled_from(["  ", "\t", " "])) + lines[i]
        else:
            lines[i] = lines[i][: data.draw(st.integers(0, max(0, len(lines[i]))))]
        if not lines:
            break
    p = tmp_path_factory.mktemp("fuzz") / "s.yaml"
    p.write_bytes("\n".join(lines).encode("utf-8", errors="replace"))
    _check(lambda: load_scenario(p))
