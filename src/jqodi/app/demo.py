"""What ``jqodi demo`` (and ``make demo``) shows, as a list of sections.

``jqodi demo`` prints the descriptive sections of the paper's Data 1 scenario (devices, models,
candidates, every solver's plan) and then runs the MAIN JOB on the CPU-scale scenario
(:func:`jqodi.app.main_job.main_job`: measure, plan, run for real, compare). ``jqodi demo
SCENARIO`` prints the descriptive sections of SCENARIO only.

Each section is a function ``(ctx: DemoContext) -> None`` that prints one titled part.
:data:`SECTIONS` is the default order; later parts of the system (planning, running the plan)
extend the demo by appending sections, or by calling :func:`run_demo` with their own list.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from jqodi.errors import ScenarioError
from jqodi.core.scenario import Scenario, default_scenario_path, load_scenario

__all__ = ["DemoContext", "SECTIONS", "run_demo", "run_main_demo", "section_scenario", "section_models", "section_candidates"]


@dataclass
class DemoContext:
    """What the sections share: the scenario, its path, and anything earlier sections computed."""

    scenario: Scenario
    path: Path
    out: TextIO = sys.stdout
    cache: dict = field(default_factory=dict)

    def print(self, *args, **kwargs) -> None:
        print(*args, file=self.out, **kwargs)

    def title(self, text: str) -> None:
        self.print(f"\n== {text} " + "=" * max(3, 76 - len(text)))

    def note_quant_kernel(self) -> None:
        """Print a line for each device file of the scenario measured on this host that timed another
        quantizer than QAT runs here (:func:`jqodi.app.calibrate.quant_kernel_notes`, as ``jqodi plan``
        and ``jqodi run`` print them before planning): its QAT epochs may be priced off."""
        from jqodi.app.calibrate import quant_kernel_notes

        for line in quant_kernel_notes(self.scenario):
            self.print(line)

    @property
    def profiles(self):
        if "profiles" not in self.cache:
            from jqodi.core.costs import scenario_profiles

            self.cache["profiles"] = scenario_profiles(self.scenario)
        return self.cache["profiles"]

    @property
    def instance(self):
        if "instance" not in self.cache:
            from jqodi.core.costs import compile_instance

            self.cache["instance"] = compile_instance(self.scenario, profiles=self.profiles)
        return self.cache["instance"]


def section_scenario(ctx: DemoContext) -> None:
    """Devices, links and the problem (T_max, L_max, data)."""
    from jqodi.render.tables import format_table, si

    s = ctx.scenario
    ctx.title(f"Scenario {s.name}")
    ctx.print(f"file: {ctx.path}")
    if s.description:
        ctx.print(s.description)
    ctx.print(f"deadline T_max = {s.deadline_s:g} s, target loss L_max = {s.target_loss:g}, "
              f"cost model '{s.cost_model}'; end-device data: {s.data.dataset} {s.data.split}, "
              f"{s.data.train_size} train + {s.data.val_size} validation samples")
    rows = []
    for role, d in [("cloud", s.cloud), *[("edge", e) for e in s.edges], ("end", s.end_device)]:
        busy_w = d.device().busy_power_w if d.device_ref is not None else d.busy_power_w  # a device file's P
        rows.append([role, d.name, si(d.speed_flops, "FLOP/s"), f"{d.joules_per_flop * 1e12:.1f}",
                     f"{busy_w:.4g}" if busy_w else "-", f"{d.memory_bytes / 2**30:g}"])
    ctx.print(format_table(["role", "node", "speed v", "ε pJ/FLOP", "busy W", "mem GiB"], rows))
    rows = [[e.name, si(e.cloud_link.rate_bps, "bit/s"), f"{e.cloud_link.joules_per_bit * 1e9:.2f}",
             si(e.end_link.rate_bps, "bit/s"), f"{e.end_link.joules_per_bit * 1e9:.2f}"] for e in s.edges]
    ctx.print()
    ctx.print(format_table(["edge", "CS↔ES rate", "CS↔ES nJ/bit", f"ES↔{s.end_device.name} rate (Shannon)",
                            "ES↔SD nJ/bit"], rows))


def section_models(ctx: DemoContext) -> None:
    """Each candidate model: blocks, FLOPs, sizes and what crosses each cut."""
    from jqodi.render.tables import format_table, human_bytes, si

    s = ctx.scenario
    ctx.title("Models and their cut profiles")
    shape = "x".join(map(str, s.data.input_shape))
    for m in s.models:
        p = ctx.profiles[m.name]
        ctx.print(f"{m.name} (width {m.width:g}, input {shape}): {si(p.flops, 'FLOP')} forward per sample, "
                  f"{p.params:,} parameters, {human_bytes(p.bytes_at(32))} fp32 / "
                  f"{human_bytes(p.bytes_at(8))} at 8 bits")
        rows = []
        for j in p.cuts:
            rows.append([j, p.blocks[j - 1].name, si(sum(b.flops for b in p.blocks[:j])),
                         si(sum(b.flops for b in p.blocks[j:])), human_bytes(sum(b.bytes_at(8) for b in p.blocks[:j])),
                         f"{p.act_elements(j):,}", human_bytes(p.act_bytes(j, 32))])
        ctx.print(format_table(["cut", "after block", "SD FLOPs", "ES FLOPs", "SD part 8-bit",
                                "act elements", "act fp32"], rows, indent="  "))


def section_candidates(ctx: DemoContext) -> None:
    """The cheapest and the fastest option per (model, bits) candidate."""
    from jqodi.render.instance import render_instance

    ctx.title(f"Candidates: cheapest and fastest epoch ({ctx.scenario.cost_model} cost model)")
    ctx.print(render_instance(ctx.instance))


def section_plan(ctx: DemoContext) -> None:
    """Every solver on the scenario and the comparison table (the planner's part)."""

    section_plans(ctx)


SECTIONS: list[Callable[[DemoContext], None]] = [section_scenario, section_models, section_candidates,
                                                 section_plan]


def run_demo(path: str | Path | None = None, sections: list[Callable[[DemoContext], None]] | None = None,
             out: TextIO | None = None) -> DemoContext:
    """Load the scenario (default: the paper's Data 1) and print each section in turn."""
    p = Path(path) if path else default_scenario_path()
    ctx = DemoContext(load_scenario(p), p, out or sys.stdout)
    ctx.note_quant_kernel()
    try:
        for sec in sections if sections is not None else SECTIONS:
            sec(ctx)
    except ScenarioError as e:  # e.g. a model that cannot be built for data.input_shape
        if str(e).startswith(f"{p}: "):
            raise
        raise ScenarioError(f"{p}: {e}") from e
    return ctx


def run_main_demo(config=None, *, describe: bool = True, out: TextIO | None = None) -> dict:
    """``jqodi demo`` without a scenario: the paper's Data 1 described, then the main job
    (``config``: a :class:`jqodi.app.main_job.MainJobConfig`, default ``make demo``'s)."""
    import time

    from jqodi.app.main_job import MainJobConfig, main_job

    config = config or MainJobConfig()
    out = out or sys.stdout
    t0 = time.perf_counter()
    if describe:
        run_demo(None, out=out)
    ctx = DemoContext(load_scenario(config.scenario_file), config.scenario_file, out)
    ctx.title("Main job: measure, plan and run the CPU-scale scenario" + (" (plan only)" if config.plan_only else ""))
    ctx.note_quant_kernel()  # the main job plans and trains this scenario
    summary = main_job(config, say=lambda s: (ctx.print(s), out.flush()))
    if not config.plan_only:  # issue 12: four end devices sharing two edge servers, planned jointly
        import dataclasses

        from jqodi.app.fleet_run import DEMO_OPTIONS, fleet_demo

        ctx.title("Fleet: 4 end devices share 2 edge servers (joint plan, one process each)")
        rec = fleet_demo(say=lambda s: (ctx.print(s), out.flush()),
                         opts=dataclasses.replace(DEMO_OPTIONS, pretrained=config.pretrain_options))
        if rec.failed():  # a demo that fails must not end as if it had worked
            from jqodi.errors import RuntimeFailure

            raise RuntimeFailure(f"the fleet section: {len(rec.failed())} of {len(rec.devices)} devices failed "
                                 f"(first: {next(iter(rec.failed().values()))})")
    ctx.print(f"\njqodi demo: {time.perf_counter() - t0:.0f} s wall in all")
    return summary


def section_plans(ctx) -> None:
    """``jqodi demo`` section: plan the scenario with every solver and print the comparison."""
    from jqodi.planner import compare
    from jqodi.render.plans import comparison_notes, comparison_table

    inst = ctx.instance
    ctx.title("Plans: every solver on this scenario (robust epoch estimate)")
    ctx.print(f"deadline {inst.deadline_s:g} s, target loss {inst.target_loss:g}; "
              "JQODI = Alg. 1-4, optimal = exact per-epoch mix, static = the paper's Optimum "
              "(one option for all epochs)")
    rows = compare(inst)
    ctx.print(comparison_table(rows))
    for line in comparison_notes(rows, inst):
        ctx.print(line)
    for r in rows:
        if r["status"] == "infeasible":
            ctx.print(f"{r['solver']}: {r['solution'].extra['explanation']['message']}")
