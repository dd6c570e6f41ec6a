import json

import pytest

from jqodi.errors import PlanningError
from jqodi.planner import PlanningInstance, Solution

DESIGN_EXAMPLE = {
    "deadline_s": 180.0, "target_loss": 0.9,
    "candidates": [
        {"model": "lenet", "bits": 6, "quantize_time_s": 1.2, "quantize_energy_j": 30.0,
         "epochs": {"expected": 33, "robust": 36},
         "loss": {"start": 0.61, "final_expected": 0.35, "final_robust": 0.38},
         "options": [{"edge": "rtx3090", "cut": 1, "epoch_time_s": 3.1, "epoch_energy_j": 150.0}]}]}


def test_design_example_round_trips():
    inst = PlanningInstance.from_json(json.dumps(DESIGN_EXAMPLE))
    assert inst.to_dict() == DESIGN_EXAMPLE
    assert inst.candidates[0].epochs.get("robust") == 36


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d.pop("deadline_s"), "deadline_s: missing"),
    (lambda d: d.update(deadline_s=-1), "deadline_s: must be > 0"),
    (lambda d: d["candidates"][0]["options"][0].update(cut=0), "candidates[0].options[0].cut"),
    (lambda d: d["candidates"][0]["epochs"].update(robust="many"), "candidates[0].epochs.robust"),
    (lambda d: d["candidates"][0].update(colour="red"), "candidates[0].colour: unknown field"),
    (lambda d: d["candidates"].append(dict(d["candidates"][0])), "duplicate candidate"),
])
def test_bad_instances_name_the_field(mutate, path):
    d = json.loads(json.dumps(DESIGN_EXAMPLE))
    mutate(d)
    with pytest.raises(PlanningError, match=path.replace("[", r"\[").replace("]", r"\]")):
        PlanningInstance.from_dict(d)


def test_solution_round_trips():
    d = {"status": "optimal", "solver": "optimal", "model": "lenet", "bits": 6,
         "schedule": [{"edge": "rtx3090", "cut": 1, "epochs": 20}], "energy_j": 5230.1, "time_s": 171.9}
    s = Solution.from_dict(d)
    assert s.epochs == 20 and s.to_dict() == d
