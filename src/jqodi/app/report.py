"""The ``report`` use case: one self-contained HTML page from the results saved in a directory.

    from jqodi.app.report import build_report
    path = build_report("out/data1")            # writes out/data1/report.html

The directory (and its sub-directories, up to :data:`MAX_DEPTH` levels) is searched for

- ``evaluation.json`` (``jqodi evaluate --out``, ``benchmarks/paper_eval.py``): one group of
  sections per evaluation, with the paper's Table V beside ours when the scenario is one of the
  paper's (:data:`jqodi.app.paper.PAPER`);
- ``record.json`` (``jqodi run``, ``make demo``, a cloud started by hand), with the main job's
  ``summary.json`` beside it when there is one: one group per run (per device for a fleet run);
- ``summary.json`` with a ``table_vi`` (``benchmarks/paper_cifar.py``), with its ``runs/*.json``:
  Table VI measured, the estimators held out, Observation 2 and the fine-tuning curves.

Nothing is recomputed from scenarios: the page shows what the JSON files hold
(:mod:`jqodi.render.html_report` draws it). A directory with nothing to report, or a file that is
not valid JSON or not what its name says, is a :class:`jqodi.errors.JqodiError` naming the file.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jqodi.errors import JqodiError

__all__ = ["MAX_DEPTH", "ReportSources", "find_sources", "build_report", "report_html"]

#: how deep below the directory given the report looks for results
MAX_DEPTH = 3


@dataclass
class ReportSources:
    """The result files found under ``root``: evaluation and run directories, sorted."""

    root: Path
    evaluations: list[Path] = field(default_factory=list)
    runs: list[Path] = field(default_factory=list)
    measured: list[Path] = field(default_factory=list)


def find_sources(root: str | os.PathLike) -> ReportSources:
    """The ``evaluation.json`` and ``record.json`` files in ``root`` and below (hidden folders
    skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise JqodiError(f"{root}: not a directory (give a run or evaluation directory)")
    found = ReportSources(root)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        if "evaluation.json" in filenames:
            found.evaluations.append(Path(dirpath) / "evaluation.json")
        if "record.json" in filenames:
            found.runs.append(Path(dirpath) / "record.json")
        elif "summary.json" in filenames and (Path(dirpath) / "runs").is_dir():
            found.measured.append(Path(dirpath) / "summary.json")
    found.evaluations.sort()
    found.runs.sort()
    found.measured.sort()
    if not found.evaluations and not found.runs and not found.measured:
        raise JqodiError(f"{root}: nothing to report (no evaluation.json or record.json in it or in its "
                         f"sub-directories; 'jqodi evaluate --out DIR' and 'jqodi run' write them)")
    return found


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise JqodiError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except UnicodeDecodeError as e:
        raise JqodiError(f"{path}: not valid JSON (not UTF-8 text)") from e
    except OSError as e:
        raise JqodiError(f"{path}: cannot read: {e.strerror or e}") from e


def _require(path: Path, data: Any, what: str, keys: dict[str, type]) -> None:
    if not isinstance(data, dict):
        raise JqodiError(f"{path}: not {what} (a JSON object expected, found {type(data).__name__})")
    for key, typ in keys.items():
        if not isinstance(data.get(key), typ):
            raise JqodiError(f"{path}: not {what} (field '{key}' missing or not a {typ.__name__})")


def _evaluation_group(path: Path, root: Path) -> tuple[str, list]:
    from jqodi.app.paper import PAPER
    from jqodi.render.html_report import evaluation_sections

    ev = _load(path)
    _require(path, ev, "an evaluation (jqodi evaluate)", {"strategies": list, "scenario": str})
    paper_v = (PAPER.get(ev.get("paper_key") or "") or {}).get("table_v")
    name = f"Evaluation: {ev['scenario']} ({path.parent.relative_to(root).as_posix() or '.'})"
    return name, evaluation_sections(ev, paper_table_v=paper_v)


def _run_groups(path: Path, root: Path) -> list[tuple[str, list]]:
    """One group per run: a ``jqodi run`` record, or each device's run of a fleet run's record
    (``jqodi run FLEET.yaml``: a ``FleetRecord`` keeps every device's full run record)."""
    rec = _load(path)
    if isinstance(rec, dict) and isinstance(rec.get("records"), dict) and "epochs" not in rec:
        return [_run_group(path, root, r, device=str(name)) for name, r in sorted(rec["records"].items())]
    return [_run_group(path, root, rec)]


def _run_group(path: Path, root: Path, rec: Any, *, device: str | None = None) -> tuple[str, list]:
    from jqodi.render.html_report import run_sections
    from jqodi.runtime.record import RunRecord

    what = f"a run record of device {device!r} (record.json of a fleet run)" if device else \
        "a run record (record.json of jqodi run)"
    _require(path, rec, what, {"epochs": list, "job": dict})
    totals = rec.get("totals")
    if not isinstance(totals, dict):
        fields = {k: rec[k] for k in RunRecord.__dataclass_fields__ if k in rec}
        totals = RunRecord(**fields).totals
    summary = None
    spath = path.parent / "summary.json"
    if spath.is_file() and device is None:
        summary = _load(spath)
        _require(spath, summary, "a main-job summary (summary.json of make demo)", {})
    job = rec.get("job") or {}
    label = (summary or {}).get("scenario_name") or (f"{job['model']} {job.get('bits')}-bit" if job.get("model") else "")
    name = (f"Run: {path.parent.relative_to(root).as_posix() or path.parent.name}" + (f", device {device}" if device else "")
            + (f" ({label})" if label else ""))
    return name, run_sections(rec, totals, summary=summary)


def _measured_group(path: Path, root: Path) -> tuple[str, list]:
    from jqodi.render.html_report import measured_sections

    summary = _load(path)
    _require(path, summary, "a measured evaluation (summary.json of benchmarks/paper_cifar.py)",
             {"table_vi": list, "config": dict})
    runs = [_load(p) for p in sorted((path.parent / "runs").glob("*.json"))]
    for p, r in zip(sorted((path.parent / "runs").glob("*.json")), runs):
        _require(p, r, "a measured run (runs/*.json of benchmarks/paper_cifar.py)",
                 {"model": str, "bits": int, "train_losses": list})
    cfg = summary["config"]
    name = (f"Measured: CIFAR-10 {cfg.get('data')} ({path.parent.relative_to(root).as_posix() or path.parent.name}; "
            f"{len(runs)} runs)")
    return name, measured_sections(summary, runs)


def _one(build):
    """A builder of one group as a builder of a list of groups (a fleet record holds several runs)."""
    return lambda path, root: [build(path, root)]


def report_html(sources: ReportSources) -> str:
    """The page for ``sources`` (see :func:`find_sources`)."""
    from html import escape

    from jqodi.render.html_report import page

    groups = []
    for path, build in ([(p, _one(_measured_group)) for p in sources.measured]
                        + [(p, _one(_evaluation_group)) for p in sources.evaluations]
                        + [(p, _run_groups) for p in sources.runs]):
        try:
            groups.extend(build(path, sources.root))
        except JqodiError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise JqodiError(f"{path}: unexpected content ({type(e).__name__}: {e})") from e
    files = ", ".join(f"<code>{escape(p.relative_to(sources.root).as_posix())}</code>"
                      for p in sources.measured + sources.evaluations + sources.runs)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    intro = (f"Built by <code>jqodi report</code> on {when} from {files} "
             f"({len(sources.measured)} measured evaluation(s), {len(sources.evaluations)} evaluation(s), "
             f"{len(sources.runs)} run(s)). "
             "Self-contained: every table and plot is in this file.")
    return page(f"jqodi report: {sources.root.resolve().name}", intro, groups)


def build_report(directory: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of ``directory`` to ``out`` (default ``directory/report.html``);
    returns its path."""
    sources = find_sources(directory)
    html = report_html(sources)
    path = Path(out) if out is not None else sources.root / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
