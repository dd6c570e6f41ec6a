"""The ``run`` use case: plan a scenario, then run the plan for real with every role on this machine.

    from jqodi.app.run import RunOptions, run_scenario
    record = run_scenario("examples/paper-data1.yaml", RunOptions(cpu_scale=True, max_epochs=2))

``jqodi run`` is a thin layer over :func:`run_scenario`; the main job (:mod:`jqodi.app.main_job`)
shares :func:`job_for_plan` (the job with inference on every usable edge and the trace store).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from jqodi.errors import JqodiError

__all__ = ["RunOptions", "job_for_plan", "job_for_scenario", "plan_for_run", "run_scenario", "report_run",
           "controller_from_job", "replan_options"]

Say = Callable[[str], None]


def _print(s: str) -> None:
    print(s, flush=True)


@dataclass(frozen=True)
class RunOptions:
    """How to plan and run (the flags of ``jqodi run``).

    ``solver``/``epochs_estimate``: the planner and the K it plans for; ``cpu_scale`` runs the
    models' CPU widths on Fashion-MNIST (``train_size``/``val_size`` then override the SD sizes);
    ``dilation``: a number ≥ 1, ``"auto"`` or ``None`` (the scenario's); ``requests``: inference
    requests per device combination after fine-tuning; ``random_init`` skips pretraining;
    ``trace_store``: where the runtime records its epochs (``"default"`` = ``$JQODI_HOME/traces.db``,
    ``None`` = not recorded); ``workdir`` ``None`` = ``runs/<scenario>``; ``progress`` False:
    no epoch lines and no progress bars while it runs (``--quiet``); ``data_dir``: the folder of the
    scenario's named datasets (overrides its ``data.data_dir``); ``estimates``: a learning-estimates JSON
    (``jqodi estimate``) planned with instead of the scenario's ``learning:`` rows, refused when made
    for another model, data or target unless ``allow_estimate_mismatch`` (:mod:`jqodi.app.estimates`).
    ``policy``: the closed loop (:mod:`jqodi.app.controller`): ``replan`` (early stop, online
    estimates, re-planning; the default), ``static`` (early stop, the plan followed), ``None``
    (no controller: every planned epoch runs, as before); ``replan_threshold`` the anti-churn
    share; ``confirm`` further epochs at or below L_max before stopping. ``choice``: which candidate
    to train (:mod:`jqodi.app.pre_run`): ``expected`` (the least expected energy under the K
    estimates' spread; the planner's choice when no controller runs or K^exp is planned) or
    ``planner``; with policy ``replan`` the first schedule is planned for T_max less the
    controller's time reserve.
    """

    solver: str = "jqodi"
    epochs_estimate: str = "robust"
    transport: str = "gloo"
    resume: bool = False
    workdir: str | Path | None = None
    max_epochs: int | None = None
    cpu_scale: bool = False
    train_size: int | None = None
    val_size: int | None = None
    emulate: bool = True
    dilation: float | str | None = None
    timeout_s: float | None = None
    startup_timeout_s: float | None = None
    port: int | None = None
    requests: int = 0
    meter: str = "auto"
    random_init: bool = False
    trace_store: str | Path | None = "default"
    progress: bool | None = None
    data_dir: str | None = None
    estimates: str | Path | None = None
    allow_estimate_mismatch: bool = False
    policy: str | None = "replan"
    replan_threshold: float = 0.03
    confirm: int = 0
    choice: str = "expected"


def job_for_plan(scenario, solution, *, requests: int = 0, **job_kw):
    """The runtime's job for ``solution`` (:func:`jqodi.runtime.plan.job_from_plan`, whose keywords
    ``job_kw`` are), serving ``requests`` inference requests on every usable edge after fine-tuning."""
    from jqodi.core.devices import edges_of_roles
    from jqodi.runtime.plan import job_from_plan

    job = job_from_plan(scenario, solution, **job_kw)
    every_edge = edges_of_roles(job.emulation.devices if job.emulation else {})
    return job.replace(inference_requests=requests, inference_edges=every_edge)


def load_for_run(path: str | Path | None, opts: RunOptions):
    """The scenario (default: the packaged Data 1), at CPU scale when ``opts.cpu_scale``."""
    from jqodi.core.scenario import default_scenario_path, load_scenario
    from jqodi.runtime.plan import cpu_scale

    scenario = load_scenario(path or default_scenario_path())
    if opts.cpu_scale:
        scenario = cpu_scale(scenario, train_size=opts.train_size, val_size=opts.val_size)
    if opts.data_dir:
        scenario = scenario.model_validate({**scenario.model_dump(),
                                            "data": {**scenario.data.model_dump(), "data_dir": opts.data_dir}})
    return scenario


def run_estimates(scenario, opts: RunOptions):
    """The learning estimates ``--estimates`` names, checked against the scenario as it runs
    (``None``: the scenario's own rows)."""
    if not opts.estimates:
        return None
    from jqodi.app.estimates import estimates_for_scenario

    return estimates_for_scenario(opts.estimates, scenario, allow_mismatch=opts.allow_estimate_mismatch,
                                  pretrained=not opts.random_init)


def learning_rows(scenario, estimates=None):
    """The learning estimates a run chooses its candidate and weighs its prior by: ``estimates``
    (``--estimates``, as :func:`run_estimates` loads them), or the scenario's own ``learning:`` rows
    when none were given."""
    return estimates if estimates is not None else scenario.estimates()


def instance_for_run(scenario, opts: RunOptions, estimates=None):
    """The planning instance of ``scenario`` with the estimates ``opts`` name (``estimates``: already loaded)."""
    from jqodi.core.costs import compile_instance

    return compile_instance(scenario, estimates=estimates if estimates is not None else run_estimates(scenario, opts))


def plan_for_run(scenario, opts: RunOptions, say: Say = _print, instance=None, estimates=None):
    """The plan to run (from ``instance`` when it is already compiled, with the learning
    ``estimates`` it was compiled from): :func:`jqodi.app.pre_run.first_plan`; one-line error when
    it is infeasible."""
    from jqodi.app.pre_run import choice_lines, first_plan

    if instance is None:
        estimates = run_estimates(scenario, opts)
        instance = instance_for_run(scenario, opts, estimates)
    from jqodi.app.calibrate import quant_kernel_notes

    for line in quant_kernel_notes(scenario):  # a device file timed another quantizer than QAT runs here
        say(line)
    say(f"planning {scenario.name} with {opts.solver} ...")
    solution = first_plan(instance, choice=opts.choice, solver=opts.solver, epochs=opts.epochs_estimate,
                          policy=opts.policy, estimates=learning_rows(scenario, estimates))
    if solution.status == "infeasible":
        raise JqodiError(f"no feasible plan: {solution.extra.get('explanation', 'see jqodi plan')}")
    for line in choice_lines(solution):
        say(line)
    sched = ", ".join(f"{e.epochs}×({e.edge}, cut {e.cut})" for e in solution.schedule)
    say(f"plan: {solution.model} at {solution.bits} bits, {sched}; predicted "
        f"{solution.time_s:.1f} s of T_max {instance.deadline_s:g} s, {solution.energy_j:.1f} J")
    return solution


def build_job(scenario, solution, opts: RunOptions, controller=None):
    """The job ``opts`` describe for ``solution`` (``jqodi run --write-job``); with the closed loop's
    ``controller``, its automatic dilation covers the options the controller may re-plan onto."""
    return job_for_plan(scenario, solution, emulate=opts.emulate, dilation=opts.dilation, timeout_s=opts.timeout_s,
                        startup_timeout_s=opts.startup_timeout_s, max_epochs=opts.max_epochs, meter=opts.meter,
                        requests=opts.requests,
                        pretrained={"source": "random"} if opts.random_init else None,
                        trace_store=opts.trace_store, replan_options=replan_options(controller))


def replan_options(controller) -> list[tuple[str, int]] | None:
    """The (edge, cut) options ``controller`` may re-plan the run's model and bits onto (those
    :func:`option_predictions` prices); ``None`` without a closed loop, and under policy ``static``
    (it follows the schedule: it stops early or skips an edge that is away, never moves an epoch)."""
    if controller is None or controller.policy == "static":
        return None
    return [(o.edge, int(o.cut)) for o in controller.table.cand(controller.key).options]


def job_for_scenario(path: str | Path | None, opts: RunOptions = RunOptions(), say: Say = _print):
    """Plan the scenario at ``path`` and return the job that would run it (``jqodi run --write-job``).

    With a policy (``opts.policy``) the job is the one ``jqodi run`` would run with its controller: a
    process on every usable edge (:func:`with_standby_edges`) and the controller itself in the job's
    ``closed_loop`` block (:func:`closed_loop_block`), which ``jqodi cloud --job`` attaches
    (:func:`controller_from_job`): a cloud started by hand stops at L_max and re-plans too."""
    scenario = load_for_run(path, opts)
    _, controller, job = _planned_run(scenario, opts, say)
    return job if controller is None else job.replace(closed_loop=closed_loop_block(controller, scenario, opts))


def _planned_run(scenario, opts: RunOptions, say: Say = _print):
    """``(solution, controller, job)`` of a fresh run of ``scenario``: the first plan, the closed
    loop's controller (``None`` without a policy) and the job that runs it, with a process on every
    usable edge when a controller may re-plan onto them (:func:`with_standby_edges`)."""
    estimates = run_estimates(scenario, opts)
    instance = instance_for_run(scenario, opts, estimates)  # once: the plan and the controller
    solution = plan_for_run(scenario, opts, say, instance, estimates)
    # the controller before the job: the job's automatic dilation covers the options it may re-plan onto
    controller = run_controller(scenario, solution, opts, instance, estimates, say)
    job = build_job(scenario, solution, opts, controller)
    return solution, controller, job if controller is None else with_standby_edges(job)


#: The layout of a job's ``closed_loop`` block (:func:`closed_loop_block`); a cloud refuses another.
CLOSED_LOOP_VERSION = 1


def run_controller(scenario, solution, opts: RunOptions, instance, estimates=None, say: Say = _print):
    """The closed-loop controller (:mod:`jqodi.app.controller`) of a run of ``solution``, planned from
    ``instance`` and the learning ``estimates``: policy, threshold and confirmation from ``opts``, the
    online K refit's prior weight from the trained candidate's estimate (said in one line). ``None``
    when ``opts.policy`` is ``None``."""
    if opts.policy is None:
        return None
    from jqodi.app.controller.loop import prior_weight_for

    weighed = prior_weight_for(learning_rows(scenario, estimates), solution.model, solution.bits)
    return closed_loop_controller(scenario, solution, policy=opts.policy, threshold=opts.replan_threshold,
                                  confirm=opts.confirm, instance=instance, weighed=weighed, say=say)


def closed_loop_controller(scenario, solution, *, policy: str, threshold: float, confirm: int, instance,
                           weighed: tuple[float, str], say: Say = _print):
    """The controller of a run of ``solution`` (:func:`jqodi.app.controller.controller_for`, planned
    from ``instance``) with the online K refit's prior weight ``weighed`` (:func:`~jqodi.app.controller.loop.prior_weight`'s
    answer: weight and why, said in one line): what ``jqodi run`` (:func:`run_controller`, the
    weight of the trained candidate's learning estimate) and the main job of ``jqodi demo`` (that of
    the estimate it measured) both build."""
    from jqodi.app.controller import controller_for
    from jqodi.app.controller.loop import said_prior_weight

    weight = said_prior_weight(weighed, policy, say)
    return controller_for(scenario, solution, policy=policy, threshold=threshold, confirm=confirm,
                          instance=instance, prior_epochs=weight)


def closed_loop_block(controller, scenario, opts: RunOptions) -> dict:
    """The job's ``closed_loop`` block: ``controller`` by content (its spec: the phase table of the
    scenario and estimates it re-plans with, the plan, its options), so the cloud needs neither file
    and a file changed since cannot change what it does. ``scenario``/``estimates``: what it was
    made from, for the reader."""
    return {"version": CLOSED_LOOP_VERSION, "policy": controller.policy, "scenario": scenario.name,
            "estimates": str(opts.estimates) if opts.estimates else None, "controller": controller.to_spec(),
            "predictions": option_predictions(controller, scenario)}


def _check_block_matches_job(solution, job, source: str) -> None:
    """The block's controller is the job's by content (written together by ``--write-job``), not by
    a name: a job whose model, bits or schedule were edited afterwards would be driven by a
    controller planning another run. Refused in one line."""
    def plan(model, bits, schedule) -> tuple[str, list[tuple[str, int, int]]]:
        return f"{model}@{int(bits)}", sorted((s.edge, int(s.cut), int(s.epochs)) for s in schedule)

    def text(key, entries) -> str:
        return f"{key} " + ", ".join(f"{n}×({e}, cut {c})" for e, c, n in entries)

    theirs, ours = plan(solution.model, solution.bits, solution.schedule), plan(job.model, job.bits, job.schedule)
    if theirs != ours:
        raise JqodiError(f"{source}: closed_loop: its controller was made for {text(*theirs)}, the job runs "
                         f"{text(*ours)} (edited after 'jqodi run --write-job'?); write the job again, or remove "
                         f"the closed_loop block to run the job's schedule as it is")


def option_predictions(controller, scenario) -> list[dict]:
    """The cost model's epoch (:func:`jqodi.runtime.plan.predict_epoch`) on every (edge, cut) option the
    controller may re-plan the run's model and bits onto: what the report of a cloud started by
    hand shows beside the epochs the closed loop moved or added (the cloud has no scenario to ask)."""
    from jqodi.runtime.plan import predict_epoch

    out = []
    for o in controller.table.cand(controller.key).options:
        out.append({"edge": o.edge, "cut": int(o.cut),
                    "predicted": predict_epoch(scenario, controller.model, controller.bits, int(o.cut), o.edge)})
    return out


def job_predictions(job, block: dict | None = None):
    """``predicted(edge, cut)`` for the record of ``job`` run by a cloud started by hand: the job's own
    prediction of each planned (edge, cut), else the ``predictions`` of its ``closed_loop`` block
    (:func:`option_predictions`), else ``None`` (a block written before it carried them). Per
    option, not per epoch index: an epoch the closed loop moved or added beyond the plan gets the
    prediction of the option it ran on, as in ``jqodi run``'s record."""
    table: dict[tuple[str, int], dict] = {}
    for row in (block or {}).get("predictions") or []:
        table[(str(row["edge"]), int(row["cut"]))] = row["predicted"]
    if len(job.predicted_epochs) == len(job.schedule):
        table.update({(s.edge, int(s.cut)): p for s, p in zip(job.schedule, job.predicted_epochs)})
    return lambda edge, cut: table.get((edge, int(cut)))


def unpredicted_note(record) -> str | None:
    """One line naming the epochs of ``record`` shown without a prediction, and why; ``None`` if none."""
    missing = [e["epoch"] for e in record.epochs if e.get("predicted") is None]
    if not missing:
        return None
    return (f"predicted '-' for epoch(s) {', '.join(str(k) for k in missing)}: they ran on an option the job "
            f"carries no prediction for (a closed_loop block written before it carried predictions); write the "
            f"job again with 'jqodi run SCENARIO --write-job FILE' to get them")


def controller_from_job(job, source: str, policy: str | None = None):
    """The controller a cloud started by hand attaches (``jqodi cloud --job``), and the one line it
    says at start: ``(controller or None, line)``. From the job's ``closed_loop`` block
    (:func:`closed_loop_block`), with ``policy`` (``--policy``) instead of the block's when given;
    a job without the block (written before it existed, or by hand) runs every planned epoch, and
    the line says why. ``source`` names the job file in errors (one line, :class:`JqodiError`)."""
    from jqodi.app.controller import POLICIES, ClosedLoopController

    block = job.closed_loop
    if block is None:
        return None, ("closed loop off: the job has no closed_loop block (written by an older 'jqodi run "
                      "--write-job' or by hand), so every planned epoch runs: no stop at L_max, no re-plan. "
                      "Write it again with 'jqodi run SCENARIO --write-job FILE' to get them")
    if block.get("version") != CLOSED_LOOP_VERSION or not isinstance(block.get("controller"), dict):
        raise JqodiError(f"{source}: closed_loop: version {block.get('version')!r} with no controller this jqodi "
                         f"reads (it reads version {CLOSED_LOOP_VERSION}); write the job again with this jqodi")
    spec = dict(block["controller"])
    if policy is not None:
        if policy not in POLICIES:
            raise JqodiError(f"--policy: must be one of {', '.join(POLICIES)}, got {policy!r}")
        opts = spec.get("options") or {}
        if isinstance(opts, dict):  # options that are no mapping: from_spec says so below, naming the job
            spec["options"] = {**opts, "policy": policy}
    try:
        controller = ClosedLoopController.from_spec(spec)
    except JqodiError as e:
        raise JqodiError(f"{source}: closed_loop: {str(e).splitlines()[0]}") from e
    _check_block_matches_job(controller.solution, job, source)
    # the cloud admits exactly the job's edges: one without a process there (its name taken out of the
    # job by hand) is away for the controller, which then never moves an epoch onto it
    no_process = sorted({o.edge for o in controller.table.cand(controller.key).options} - set(job.edges))
    controller.edges_down.update(no_process)
    how = (f"re-plans after every epoch and on resource events within T_max {controller.deadline_s:g} s, "
           f"keeping a time reserve" if controller.policy == "replan" else "follows the plan")
    origin = "--policy" if policy is not None else "the job"
    return controller, (f"closed loop on: policy {controller.policy} (from {origin}): stops at L_max "
                        f"{controller.target_loss:g} and {how}"
                        + ("; '--policy static' follows the plan" if controller.policy == "replan" else "")
                        + (f"; never onto {', '.join(no_process)} (no process in the job)" if no_process else ""))


def run_scenario(path: str | Path | None, opts: RunOptions = RunOptions(), say: Say = _print):
    """Plan the scenario at ``path`` and run the plan; returns ``(record, workdir)``: the
    :class:`jqodi.runtime.RunRecord`, saved as ``workdir/record.json``. With ``opts.resume`` and a
    job in the workdir, that job continues after its last completed epoch (no new plan)."""
    scenario = load_for_run(path, opts)
    workdir = Path(opts.workdir or f"runs/{scenario.name}")
    created = [d for d in (workdir, *workdir.parents) if not d.exists()]  # what the lock will create
    try:
        with WorkdirLock(workdir, "run"):  # a second run or cloud into this workdir refuses in one line
            return _run_scenario(scenario, workdir, opts, say)
    except BaseException:  # failed (data, plan, Ctrl-C): no empty workdir of ours stays behind
        for d in created:  # innermost first; a folder holding anything is kept
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _run_scenario(scenario, workdir: Path, opts: RunOptions, say: Say):
    from jqodi.runtime.launch import run_plan

    from jqodi.runtime.process import CHECKPOINT_NAME

    if opts.resume and not ((workdir / "job.json").is_file() and (workdir / CHECKPOINT_NAME).is_file()):
        raise JqodiError(f"--resume: {workdir} holds no job.json and {CHECKPOINT_NAME} to continue from "
                         f"(run without --resume to start over)")
    if opts.resume:  # the workdir's job continues: no new plan
        solution, controller, job = None, resumed_controller(workdir), None
    else:  # data that cannot be loaded: said now, not after planning and starting the roles
        from jqodi.core.data import check_scenario_data

        check_scenario_data(scenario.data)
        solution, controller, job = _planned_run(scenario, opts, say)
    record = run_plan(scenario, solution, transport=opts.transport, workdir=workdir, resume=opts.resume,
                      port=opts.port, job=job, say=say if opts.progress is not False else (lambda line: None),
                      progress=opts.progress, controller=controller)
    return record, workdir


#: The lock file a run or a cloud holds in its workdir (:class:`WorkdirLock`).
LOCK_NAME = "jqodi.lock"


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or ``None`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat), or ``None`` where unknown:
    with the PID it names one process, so a PID reused by another process is not taken for the holder."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _alive(pid: int, started: str | None) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    fields = _stat_fields(pid)  # a zombie has ended: its parent has not reaped it yet (an orphan's init may never)
    if fields and fields[0] in ("Z", "X"):
        return False
    now = _started(pid)
    return started is None or now is None or now == started


def _live_holder(holder: dict, pid: int) -> int | None:
    """The PID of a live process holding the lock ``holder`` (its taker, else the cloud that joined
    it: :meth:`WorkdirLock._join`), ``None`` if none is alive (a stale lock)."""
    if pid > 0 and _alive(pid, holder.get("started")):
        return pid
    joined = holder.get("with")
    try:
        other = int(joined["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    return other if other > 0 and _alive(other, joined.get("started")) else None


class WorkdirLock:
    """One ``jqodi run`` or ``jqodi cloud`` per workdir at a time: ``WORKDIR/jqodi.lock`` holds the
    holder's PID (and start time); a second one refuses in one line naming it. A lock whose process
    has ended (killed, crashed, or a role that left through ``os._exit``) is stale and taken over.
    The cloud ``jqodi run`` starts for its own run (its parent holds the lock) joins it instead: the
    lock stays held while either lives (a killed ``jqodi run`` leaves its roles running to the end).

        with WorkdirLock(workdir, "run"):
            ...
    """

    def __init__(self, workdir: str | Path, verb: str):
        self.path = Path(workdir) / LOCK_NAME
        self.verb = verb
        self.held = False

    def acquire(self) -> "WorkdirLock":
        import json
        import os

        if self.path.parent.exists() and not self.path.parent.is_dir():
            raise JqodiError(f"{self.path.parent}: not a folder: 'jqodi {self.verb}' keeps its lock ({LOCK_NAME}) "
                             f"and its record in its workdir; give a --workdir that is a folder")
        with self._writing():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "started": _started(os.getpid()), "verb": self.verb}
        for _ in range(3):  # a stale lock is replaced, then read back: of two takers one wins
            try:
                holder = json.loads(self.path.read_text())
                pid = int(holder["pid"])
            except FileNotFoundError:
                holder = None
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid = {}, -1  # unreadable: a torn write of a dead holder; taken over
            live = _live_holder(holder, pid) if holder is not None else None
            if live is not None:
                if live == os.getpid():
                    return self
                if pid == os.getppid() and live == pid:  # 'jqodi run' started this cloud in its own workdir
                    self._join(holder, me)
                    return self
                raise JqodiError(f"{self.path.parent}: another 'jqodi {holder.get('verb', '?')}' (PID {live}) is "
                                 f"running in this workdir ({self.path}); wait for it, stop it, or use another "
                                 f"--workdir")
            tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}")
            with self._writing():
                tmp.write_text(json.dumps(me))
                if holder is None:
                    try:
                        os.link(tmp, self.path)  # atomic: fails if another process created it meanwhile
                    except FileExistsError:
                        tmp.unlink(missing_ok=True)
                        continue
                    tmp.unlink(missing_ok=True)
                else:
                    os.replace(tmp, self.path)
            try:
                if int(json.loads(self.path.read_text())["pid"]) == os.getpid():
                    self.held = True
                    return self
            except (OSError, ValueError, KeyError, TypeError):
                pass
        raise JqodiError(f"{self.path}: cannot take the workdir's lock (another process keeps changing it)")

    def _join(self, holder: dict, me: dict) -> None:
        """The cloud of the holder's run writes itself into the lock beside it: the roles run in their
        own sessions, so a killed ``jqodi run`` leaves its cloud writing the workdir until the run ends,
        and the lock stays held while it does. Only the holder's child writes here, after the holder
        took the lock and before it releases it."""
        import json
        import os

        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}")
        with self._writing():
            tmp.write_text(json.dumps({**holder, "with": me}))
            os.replace(tmp, self.path)

    @contextmanager
    def _writing(self):
        """Writing the lock (through a temporary file beside it): a workdir that cannot be written
        (read-only, another user's) is one line naming the workdir, not the temporary file."""
        try:
            yield
        except OSError as e:
            raise JqodiError(f"{self.path.parent}: cannot write in this workdir ({e.strerror or e}): 'jqodi "
                             f"{self.verb}' keeps its lock ({LOCK_NAME}) and its record there; give a --workdir "
                             f"you can write") from e

    def release(self) -> None:
        import json
        import os

        if not self.held:
            return
        self.held = False
        try:
            if int(json.loads(self.path.read_text())["pid"]) == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def with_standby_edges(job):
    """``job`` with a process on every usable edge: a re-plan may move epochs to any of them."""
    from jqodi.core.devices import edges_of_roles

    return job.replace(standby_edges=edges_of_roles(job.emulation.devices if job.emulation else {}))


def resumed_controller(workdir: Path):
    """The controller a resumed run continues with (``workdir/controller.json``), or ``None``."""
    import json

    from jqodi.app.controller import ClosedLoopController

    p = Path(workdir) / "controller.json"
    if not p.is_file():
        return None
    try:
        return ClosedLoopController.from_spec(json.loads(p.read_text()))
    except ValueError as e:
        raise JqodiError(f"{p}: unreadable controller: {e}") from e


def report_run(record, workdir: str | Path | None = None) -> str:
    """The run's report (:func:`jqodi.render.runs.run_report`): how it ended, predicted vs measured."""
    from jqodi.render.runs import control_lines, run_report

    text = run_report(record, workdir)
    lines = control_lines(record)
    return text + ("\n\n" + "\n".join(lines) if lines else "")
