"""``jqodi infer``: collaborative inference with a fine-tuned model (the paper's Fig. 9/10).

Serves N single-sample requests from the end device's validation split for each device
combination: shallow part on the SD and deep part on each ES, and the whole model on the SD;
prints latency p50/p95 and energy per request per node.
"""
from __future__ import annotations

HELP = "serve requests with a fine-tuned model: SD+ES (split) and SD-only latency and energy"


def add_arguments(p) -> None:
    from jqodi.cli import _types as t

    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="a run's directory (job.json + checkpoint.pt; default runs/<default scenario>)")
    p.add_argument("--requests", type=t.positive_int, default=100, metavar="N", help="requests per combination (default 100)")
    p.add_argument("--cut", type=t.nonneg_int, default=None, help="partition point (default: the plan's last)")
    p.add_argument("--no-emulate", action="store_true", help="run flat out (no device padding or link limits)")
    p.add_argument("--plan", metavar="FILE", default=None,
                   help="a solution JSON ('jqodi plan --json') with a serving section: serve with its "
                        "configuration and compare measured with predicted latency/energy and the bound")
    p.add_argument("--json", metavar="FILE", help="save the results as JSON")


def run(args) -> int:
    import json
    from pathlib import Path

    import torch

    from jqodi.errors import JqodiError
    from jqodi.render.runs import format_inference
    from jqodi.runtime.inference import run_inference
    from jqodi.runtime.job import Job
    from jqodi.runtime.process import CHECKPOINT_NAME, initial_master, load_checkpoint

    wd = Path(args.workdir) if args.workdir else None
    if wd is None:
        from jqodi.core.scenario import default_scenario_path, load_scenario

        wd = Path(f"runs/{load_scenario(default_scenario_path()).name}")
    if not (wd / "job.json").is_file():
        from jqodi.runtime.fleet_launch import FLEET_JOB_NAME

        if (wd / FLEET_JOB_NAME).is_file():
            raise JqodiError(f"--workdir: {wd} is a fleet run: a fleet's devices are not served after fine-tuning "
                             f"(docs/fleet.md, 'Not done'); infer serves the run of a one-device scenario")
        raise JqodiError(f"--workdir: {wd} holds no job.json (run 'jqodi run' first)")
    try:
        job = Job.from_dict(json.loads((wd / "job.json").read_text()))
    except (OSError, ValueError) as e:  # ValueError: not JSON (a JobError names the bad field itself)
        raise JqodiError(f"--workdir: cannot read {wd / 'job.json'}: {str(e).splitlines()[0]}") from e
    torch.set_num_threads(1)
    master = initial_master(job)
    state = load_checkpoint(wd, job, master)
    if state is None:
        print(f"note: no {CHECKPOINT_NAME} in {wd}: serving the model before fine-tuning")
    else:
        print(f"model after {state.epoch} fine-tuning epoch(s) from {wd / CHECKPOINT_NAME}")
    from jqodi.core.data import end_device_data

    d = job.data
    data = end_device_data(d.name, d.dataset, d.data_dir, d.train_size, d.val_size, d.seed)
    combos = None
    if args.cut is not None:
        from jqodi.core.devices import edges_of_roles

        edges = edges_of_roles(job.emulation.devices if job.emulation else {})
        combos = [(e, args.cut) for e in edges or job.edges] + [(None, None)]
    served = None
    if args.plan:
        served = _planned_serving(args.plan, job)
        combos = [(served["edge"], served["cut"]) if served["mode"] == "split" else (None, None)]
    res = run_inference(job, master, data, requests=args.requests, combos=combos,
                        emulate=False if args.no_emulate else None)
    if res and res[0].requests < args.requests:
        print(f"note: {res[0].requests} requests per combination, not the {args.requests} asked: each request is one "
              f"image of the end device's validation split, which holds {res[0].requests}")
    if res and res[0].dilation > 1:
        print(f"emulated: dilation ×{res[0].dilation:.3g} (latencies are wall-clock / dilation)")
    print(format_inference(res))
    out = [r.to_dict() for r in res]
    if served is not None:
        from jqodi.render.serving import served_vs_planned

        fig, lines = served_vs_planned(res[0], served)
        print("\n".join(lines))
        out[0]["planned_serving"] = fig
    if args.no_emulate and res:
        print(_energy_note(job, {k: v for r in res for k, v in r.meters.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def _planned_serving(path, job) -> dict:
    """The ``serving`` section of a solution file, checked against the run's model and bits."""
    import json
    from pathlib import Path

    from jqodi.errors import JqodiError

    p = Path(path)
    try:
        sol = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JqodiError(f"--plan: cannot read {p}: {e}") from None
    sv = sol.get("serving") if isinstance(sol, dict) else None
    if not isinstance(sv, dict) or sv.get("mode") not in ("split", "end-only"):
        raise JqodiError(f"--plan: {p} has no serving section (plan a scenario with a 'serving:' block)")
    if (sol.get("model"), sol.get("bits")) != (job.model, job.bits):
        raise JqodiError(f"--plan: the plan serves {sol.get('model')}@{sol.get('bits')} but the run fine-tuned "
                         f"{job.model}@{job.bits}")
    from jqodi.core.devices import edges_of_roles

    edges = edges_of_roles(job.emulation.devices) if job.emulation is not None else job.edges
    if sv["mode"] == "split" and sv.get("edge") not in edges:
        raise JqodiError(f"--plan: the plan serves via edge {sv.get('edge')!r}, not one of the run's "
                         f"({', '.join(edges)})")
    return sv
def _energy_note(job, meters: dict) -> str:
    """What ``--no-emulate`` charges: each node's meter, and for the model meter whose power."""
    devices = job.emulation.devices if job.emulation is not None else {}
    parts = []
    for node, meter in sorted(meters.items()):
        dev = devices.get(node)
        if meter == "model" and dev is not None:
            parts.append(f"{node}: model meter, the scenario's {dev.name} busy power "
                         f"({dev.busy_power_w:g} W) × this host's busy time")
        else:
            parts.append(f"{node}: {meter} meter")
    return ("note: --no-emulate: energy per request is " + "; ".join(parts)
            + (" — not this host's power" if any(m == "model" for m in meters.values()) else ""))
