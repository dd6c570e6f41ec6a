"""One role in this process, over gloo: what ``jqodi cloud``, ``jqodi edge`` and ``jqodi end`` run.

The cloud loads (or pretrains) the master, publishes the job at the rendezvous, runs the epochs,
checkpoints after each (model format version + master + epoch counter + the epoch records; a
checkpoint of another :data:`jqodi.core.quant.MODEL_FORMAT_VERSION` is refused in one line; the
optimizer state is empty by design: each role builds a fresh optimizer every epoch, like the reference
:func:`jqodi.learning.reference.protocol_epoch`), and writes the cloud's epoch records as JSON.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Callable

from jqodi.core.progress import Progress
from jqodi.errors import JqodiError, RuntimeFailure
from jqodi.runtime.job import DEFAULT_STARTUP_TIMEOUT_S, Job
from jqodi.runtime.local import link_rates, make_context
from jqodi.runtime.roles import CloudRole, CloudState, EdgeRole, EndRole

__all__ = ["initial_master", "load_checkpoint", "save_checkpoint", "serve_role", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


def _fingerprint(job: Job) -> dict:
    return {"model": job.model, "bits": job.bits, "width": job.width, "input_shape": list(job.input_shape),
            "schedule": [[s.edge, s.cut, s.epochs] for s in job.schedule], "seed": job.training.seed}


def initial_master(job: Job, log: Callable[[str], None] = lambda s: None, *, progress: bool | None = None):
    """The cloud's master: the pretrained model (``job.pretrained``) QAT-prepared at ``job.bits``.

    ``job.pretrained = {"source": "random", "seed": S}`` skips pretraining (tests, benchmarks);
    otherwise its keys go to :func:`jqodi.core.pretrained.load_pretrained` (pretraining on a cache miss).
    """
    import torch

    from jqodi.core.quant import prepare_qat
    from jqodi.core.zoo import build_model

    opts = dict(job.pretrained)
    source = opts.pop("source", "pretrained")
    if source == "random":
        seed = int(opts.pop("seed", 0))
        model = build_model(job.model, job.input_shape, job.num_classes, job.width, seed=seed)
        calib = torch.randn(64, *job.input_shape, generator=torch.Generator().manual_seed(seed))
    elif source == "pretrained":
        from jqodi.core.pretrained import load_pretrained

        log(f"cloud: loading the pretrained {job.model} (width {job.width:g}) on {job.data.dataset}")
        opts.setdefault("data_dir", job.data.data_dir)
        pre = load_pretrained(job.model, job.data.dataset, job.width, progress=progress, **opts)
        model, calib = copy.deepcopy(pre.model), pre.calibration
    else:
        raise JqodiError(f"job.pretrained.source: must be 'pretrained' or 'random', got {source!r}")
    return prepare_qat(model.train(), job.bits, job.training.act_bits, calibration=calib)


def save_checkpoint(directory: Path, job: Job, state: CloudState) -> Path:
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_NAME
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    from jqodi.core.quant import MODEL_FORMAT_VERSION

    torch.save({"model_format_version": MODEL_FORMAT_VERSION, "master": state.master.state_dict(),
                "epoch": state.epoch, "epochs": state.epochs, "optimizer_state": None,
                "fingerprint": _fingerprint(job), "job": job.to_dict(),
                "elapsed_s": state.elapsed_s, "best": state.best, "observations": state.observations,
                "control": state.control}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(directory: Path, job: Job, master) -> CloudState | None:
    import torch

    path = Path(directory) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise RuntimeFailure(f"cloud: checkpoint {path} is unreadable: {e}", peer="cloud") from e
    from jqodi.core.quant import MODEL_FORMAT_VERSION

    version = ck.get("model_format_version", 1) if isinstance(ck, dict) else None
    if version != MODEL_FORMAT_VERSION:  # version 1 checkpoints predate the field
        raise RuntimeFailure(f"cloud: checkpoint {path} has model format version {version}, this jqodi reads "
                             f"version {MODEL_FORMAT_VERSION}; remove it or run without --resume", peer="cloud")
    if ck.get("fingerprint") != _fingerprint(job):
        raise RuntimeFailure(f"cloud: checkpoint {path} belongs to another plan "
                             f"({ck.get('fingerprint')}); remove it or run without --resume", peer="cloud")
    master.load_state_dict(ck["master"])
    return CloudState(master, int(ck["epoch"]), list(ck["epochs"]), elapsed_s=float(ck.get("elapsed_s", 0.0)),
                      best=ck.get("best"), observations=list(ck.get("observations") or []),
                      control=dict(ck.get("control") or {}))


def _say(text: str) -> None:
    print(text, flush=True)


def serve_role(role: str, *, host: str, port: int, timeout_s: float, job: Job | None = None,
               startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
               workdir: str | Path | None = None, resume: bool = False, bind_host: str | None = None,
               message_log: str | Path | None = None, say: Callable[[str], None] = _say,
               token_file: str | Path | None = None, controller=None,
               on_job: Callable[[Job], None] | None = None, data_paths: dict | None = None) -> int:
    """Run ``role`` ("cloud", "end" or "edge:NAME") until the plan is done; returns an exit code.

    ``startup_timeout_s`` bounds the rendezvous and the forming of the process group;
    ``timeout_s`` is the failure-detection (silence) timeout once the roles run.

    ``message_log``: write every message this role sent or received (kind, peer, tensor shapes,
    bytes) there as JSON when the role ends, also on failure (the privacy test reads it).
    ``controller`` (cloud only): what the cloud asks after each epoch (:mod:`jqodi.runtime.control`).
    ``on_job``: called with the job once this role has it (an edge or end learns it from the cloud).
    ``data_paths`` (end only): this device's copies of the job's data, ``{"data": PATH, "dataset":
    PATH}`` (``jqodi end --data/--dataset``; :mod:`jqodi.runtime.end_data`).

    ``token_file``: the job secret (:mod:`jqodi.runtime.auth`; else ``$JQODI_JOB_TOKEN``). A cloud
    without one creates a fresh secret and writes it to ``workdir/job.token`` (mode 0600) for the
    operator to hand to the edge and end machines.

    Failures raise :class:`RuntimeFailure` after telling the peers (``abort``).
    """
    from jqodi.runtime.auth import TOKEN_FILE_NAME, load_secret, new_secret, write_token_file
    from jqodi.runtime.rendezvous import connect
    from jqodi.runtime.transport import GlooTransport

    from jqodi.core.threads import set_threads

    # $JQODI_THREADS (the launcher divides the cores among the roles it starts), else every usable
    # core: a role started by hand runs alone on its machine
    set_threads()
    secret = load_secret(token_file)
    state = token_line = None
    if role == "cloud":
        if job is None:
            raise JqodiError("cloud: needs a job (--job FILE)")
        wd = Path(workdir or ".")
        master = initial_master(job, say)
        if resume:
            state = load_checkpoint(wd, job, master)
            if state is None:
                say(f"cloud: no checkpoint in {wd}; starting from epoch 1")
            else:
                say(f"cloud: resuming after epoch {state.epoch}/{job.total_epochs} from {wd / CHECKPOINT_NAME}")
        if state is None:
            state = CloudState(master, 0, [])
        job = job.replace(start_epoch=state.epoch)
        published = job.to_dict()
        if secret is None:
            secret = new_secret()
            path = write_token_file(wd / TOKEN_FILE_NAME, secret)
            # said once the rendezvous listens: a cloud that cannot (a port in use) asks for no peers
            token_line = (f"cloud: job token written to {path} (mode 0600): give it to the edge and end "
                          f"processes with --token-file")
    else:
        published = None
    pg, ranks, job_dict, keep = connect(role, host, port, startup_timeout_s, job=published, bind_host=bind_host,
                                        on_listening=None if token_line is None else (lambda: say(token_line)),
                                        secret=secret, say=say)
    job = Job.from_dict(job_dict)
    if on_job is not None:
        on_job(job)
    from jqodi.runtime.messages import MessageLimits, message_limits

    # heartbeats start at once (a peer counts silence from now); until this role knows the job's
    # limits it accepts control messages only, and it knows them before it says "ready"
    t = GlooTransport(pg, role, ranks, timeout_s=timeout_s, link_rate_bps=link_rates(job, role),
                      limits=MessageLimits.control_only(), secret=secret if job.message_mac else None)
    t.start()
    t.limits = message_limits(job)
    ctx = make_context(job, t, say)
    try:
        if role == "cloud":
            on_progress, on_epoch = run_progress(job, say)

            def checkpoint(st):
                save_checkpoint(wd, job, st)
                write_epochs(wd, st)

            role_obj = CloudRole(ctx, state, on_epoch, on_progress, checkpoint, controller=controller)
        elif role == "end":
            role_obj = EndRole(ctx, data_paths=data_paths)
        else:
            role_obj = EdgeRole(ctx, role.split(":", 1)[1])
        role_obj.run()
    except RuntimeFailure as e:
        t.abort(str(e), e.peer)
        _dump_log(t, message_log)
        raise
    except JqodiError as e:  # e.g. the end device's data is missing: name the role and the reason
        t.abort(f"{role}: {e}", role)
        _dump_log(t, message_log)
        raise
    except BaseException as e:
        t.abort(f"{role} crashed: {type(e).__name__}: {e}", role)
        raise
    finally:
        if keep[2] is not None and sys.exc_info()[0] is not None:
            keep[2].stop()
    t.close(wait_s=min(timeout_s, 30.0))
    if keep[2] is not None:  # the cloud's gatekeeper refuses late claimants until the very end
        keep[2].stop()
    _dump_log(t, message_log)
    return 0


def run_progress(job: Job, say: Callable[[str], None], stream=None, enabled: bool | None = None):
    """``(on_progress, on_epoch)`` for the cloud role: a bar with rate and ETA of the whole run on
    a terminal, else a plain line every 10 s (which ``jqodi run`` relays), and one line per epoch."""
    total = job.total_epochs
    bar = Progress(enabled, "", stream=stream or sys.stdout)

    def on_progress(p: dict) -> None:
        if bar.total_steps is None:  # every epoch has the same batches; a resumed run starts later
            bar.total_steps = (total - job.start_epoch) * int(p["batches"])
        bar.label = f"  {epoch_of(p['epoch'], total)} [{p['edge']}, cut {p['cut']}]"
        bar.batch(int(p["batch"]), int(p["batches"]), float(p["loss"]))

    def on_epoch(rec) -> None:
        bar.clear()
        say(epoch_line(rec, total))

    return on_progress, on_epoch


def _dump_log(t, path) -> None:
    if path is None:
        return
    rows = [{"direction": r.direction, "peer": r.peer, "kind": r.kind, "nbytes": r.nbytes, "t": r.t,
             "tensors": [[n, list(shape), dtype] for n, shape, dtype in r.shapes]} for r in t.log]
    Path(path).write_text(json.dumps({"role": t.me, "messages": rows}))


EPOCHS_NAME = "epochs.json"


def write_epochs(directory: Path, state: CloudState) -> None:
    path = Path(directory) / EPOCHS_NAME
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"completed": state.epoch, "epochs": state.epochs, "inference": state.inference,
                               "control": state.control,
                               "best": {k: v for k, v in (state.best or {}).items() if k != "state"} or None}))
    tmp.replace(path)


def epoch_of(epoch: int, total: int) -> str:
    """``epoch 3/8`` for the 0-based ``epoch`` of a plan of ``total``; past the plan (epochs the closed
    loop added) ``epoch 9 (plan: 8)``, not ``epoch 9/8``."""
    n = int(epoch) + 1
    return f"epoch {n}/{total}" if n <= total else f"epoch {n} (plan: {total})"


def epoch_line(rec: dict, total: int) -> str:
    return (f"{epoch_of(rec['epoch'], total)} [{rec['edge']}, cut {rec['cut']}]: train {rec['train_loss']:.4f}"
            f"  val {rec['val_loss']:.4f}  acc {rec['val_accuracy']:.1%}  {rec['wall_s']:.2f}s wall")
