"""Scenario files: the YAML description of one end device, its edge servers and the cloud.

A scenario says everything the planner needs that is not learned: the devices (Table I's
v and ε), the links (v_(c,x), ε_(c,x); b_(x,y), σ, transmit power → v_(x,y), ε_(x,y)), the
candidate models and bit-widths (𝓜 and Ω), the end device's dataset sizes, the deadline
T_max and target loss L_max, the cost model, and an optional static table of learning
estimates (L_a, γ_(a,q), K^exp, K^rob; Tables VI/VII of the paper).

    >>> from jqodi.core.scenario import load_scenario, default_scenario_path
    >>> s = load_scenario(default_scenario_path())
    >>> s.deadline_s, [e.name for e in s.edges]
    (180.0, ['rtx3090', 'rtx4090'])

Every problem with a file ends as one :class:`~jqodi.errors.ScenarioError` whose message is a
single line ``<file>: <field.path>: <problem>`` (the first problem found).

The devices and links live in :mod:`jqodi.core.devices` (re-exported here), the number types
and the error formatting shared with every other input in :mod:`jqodi.core.validation`, the
learning rows are :class:`~jqodi.core.estimates.LearningEstimate` and the training defaults
come from :mod:`jqodi.core.train_config`.

Units: FLOP/s, J/FLOP, W, bit/s, J/bit, Hz, dB, GiB, seconds. Numbers may be written in YAML
as ``1.0e9`` or ``1e9`` (a string such as ``"1e9"`` is read as a number).
"""
from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path
from typing import Optional, Annotated, Any, Literal, Union

import yaml
from pydantic import (BeforeValidator, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from jqodi.core.data.catalog import DATASETS, SD_SPLIT_NAMES
from jqodi.core.devices import CloudLink, CloudServer, Device, DeviceSpec, EdgeServer, EndDevice, WirelessLink
from jqodi.core.estimates import LearningEstimate, check_estimate
from jqodi.core.timeline import Timeline, TimelineEvent, device_key, resolve_timeline
from jqodi.core.fleet import EndDeviceEntry, FleetSpec, check_fleet
from jqodi.core.train_config import TRAIN_DEFAULTS
from jqodi.core.userdata import names_a_path
from jqodi.core.userfile import is_pipe, read_user_file
from jqodi.core.validation import (VALID_BITS, FieldProblem, Int, Name, NoBool, NonNegFloat, PosFloat, PosInt,
                                   Strict, error_line, one_line)
from jqodi.errors import ScenarioError

__all__ = [
    "Scenario", "DeviceSpec", "Device", "CloudServer", "EdgeServer", "EndDevice", "CloudLink", "WirelessLink",
    "DataSpec", "ModelEntry", "TrainingSpec", "RuntimeSpec", "ServingSpec", "SERVING_MODES",
    "load_scenario", "parse_scenario", "default_scenario_path", "packaged_scenarios", "scenario_path", "PAPER_MODELS",
    "VALID_BITS",
]

#: The paper's models (always known, even before the zoo — and torch — is imported).
PAPER_MODELS = ("lenet", "vgg", "resnet20")

#: Dataset sizes: positive and at most 10^9 (beyond that the FLOP counts stop being exact floats).
SampleCount = Annotated[int, NoBool, Field(gt=0, le=10**9)]


# --- data, models, training, runtime -------------------------------------------------------

def _three_sizes(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and len(v) != 3:
        raise ValueError(f"expected 3 sizes [C, H, W], got {len(v)}")
    return v


def _dataset_name(v: Any) -> Any:
    """A known dataset, or the path of your own (an image folder, a ``.npz`` file): checked for
    existence by :func:`jqodi.core.data.check_scenario_data` (``jqodi run``), not here — planning
    needs no data."""
    if isinstance(v, str) and v not in DATASETS and not names_a_path(v):
        raise ValueError(f"must be {', '.join(DATASETS)} or the path of an image folder or a .npz "
                         f"file (with a '/'), got {v!r}")
    return v


def _split_name(v: Any) -> Any:
    if isinstance(v, str) and v not in SD_SPLIT_NAMES and not names_a_path(v):
        raise ValueError(f"must be {', '.join(SD_SPLIT_NAMES)} or the path of your own image folder or .npz "
                         f"file (with a '/'), got {v!r}")
    return v


def _exists(p: Path) -> bool:
    """Does ``p`` exist? A path that cannot even be looked up (too long, a NUL byte) does not:
    the data is checked when a run loads it, not when a plan is made."""
    try:
        return p.exists()
    except (OSError, ValueError):
        return False


def _data_path(v: str, field: str, info: ValidationInfo) -> str:
    """A relative data path of a scenario file, made absolute from the file's folder (as device and
    trace files are). A path found only from the current directory is still taken from there, for
    now, with a warning saying how to write it (the loader prints it; see :func:`load_scenario`)."""
    ctx = info.context or {}
    base = ctx.get("base_dir")
    try:
        p = Path(v).expanduser()
    except RuntimeError:  # ~user of no such user
        raise ValueError(f"no home folder for {v.split('/')[0]!r}") from None
    if base is None or p.is_absolute():
        return str(p) if p.is_absolute() else v
    here = Path(os.path.abspath(Path(base) / p))
    if _exists(here) or not _exists(p):
        return str(here)
    cwd = Path(os.path.abspath(p))
    notes = ctx.get("notes")
    if notes is not None:
        try:
            rel = os.path.relpath(cwd, base)
        except ValueError:  # pragma: no cover - another drive (Windows)
            rel = str(cwd)
        notes.append(f"data.{field}: {v!r} is not in the scenario file's folder ({base}); read from the current "
                     f"directory as {cwd} for now: write it relative to the scenario file ({rel!r}) or as an "
                     f"absolute path")
    return str(cwd)


class DataSpec(Strict):
    """The data: the cloud's ``dataset`` (its train split pretrains the models) and the end
    device's private ``split`` — the paper's data1/data2 drawn from it, or the path of your own
    image folder or ``.npz`` (then ``train_size``/``val_size`` are taken from its splits) —
    how many samples, and ``data_dir``, the folder holding the named datasets' files.

    In a scenario file, a relative path (``split: ./my-images``, ``data_dir: data``) is read from
    the file's folder, as its device and trace files are, and stored absolute; :meth:`written`
    gives a path as the file wrote it (the by-hand job records it, for an end device whose copy
    lies elsewhere)."""

    dataset: Annotated[str, BeforeValidator(_dataset_name)] = "cifar10"
    split: Annotated[str, BeforeValidator(_split_name)] = "data1"
    data_dir: str | None = None
    train_size: SampleCount
    val_size: SampleCount
    input_shape: Annotated[tuple[PosInt, PosInt, PosInt], BeforeValidator(_three_sizes)] = (3, 32, 32)
    num_classes: Annotated[int, NoBool, Field(ge=2, le=1_000_000)] = 10

    _written: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("dataset", "split", "data_dir")
    @classmethod
    def _relative_to_file(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or (info.field_name != "data_dir" and not names_a_path(v)):
            return v
        if isinstance(info.context, dict):
            info.context.setdefault("data_written", {})[str(info.field_name)] = v
        return _data_path(v, str(info.field_name), info)

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, dict):
            self._written = dict(context.get("data_written") or {})

    def written(self, field: str) -> str | None:
        """The data path ``field`` (``dataset``, ``split``, ``data_dir``) as the scenario file wrote it
        (``./my-images``), or ``None`` where it names no path."""
        return self._written.get(field)


class ModelEntry(Strict):
    """A candidate model M_a: a registered zoo name and a width multiplier (1.0 = paper size)."""

    name: Name
    width: Annotated[float, NoBool, Field(gt=0, le=16, allow_inf_nan=False)] = 1.0


def _entry_from_name(v: Any) -> Any:
    """``models: [lenet, vgg]`` is short for ``models: [{name: lenet}, {name: vgg}]``."""
    return {"name": v} if isinstance(v, str) else v


BitsPolicy = Union[Literal["same"], Annotated[int, NoBool, Field(ge=1, le=32)]]


class TrainingSpec(Strict):
    """Fine-tuning hyper-parameters, and the precision of the cut-layer traffic.

    ``act_bits``/``grad_bits``: bits per element of the cut-layer activations (SD → ES) and of
    their gradients (ES → SD) on the wire; ``"same"`` means the candidate's weight bit-width
    (32 for the full-precision model). Only the ``extended`` cost model counts this traffic.
    """

    # The defaults are jqodi.core.train_config's (one set for the scenario, the job and the reference).
    # ≥ 2: batch normalisation (VGG, ResNet20) cannot train on batches of one sample
    batch_size: Annotated[int, NoBool, Field(ge=2, le=10**6)] = TRAIN_DEFAULTS.batch_size
    optimizer: Literal["adam", "sgd"] = TRAIN_DEFAULTS.optimizer  # type: ignore[assignment]
    lr: PosFloat = TRAIN_DEFAULTS.lr
    momentum: Annotated[float, NoBool, Field(ge=0, lt=1)] = TRAIN_DEFAULTS.momentum
    weight_decay: NonNegFloat = TRAIN_DEFAULTS.weight_decay
    act_bits: BitsPolicy = "same"
    grad_bits: BitsPolicy = 32
    seed: Annotated[int, NoBool, Field(ge=0)] = 0

    @field_validator("act_bits", "grad_bits")
    @classmethod
    def _bits(cls, v):
        if v != "same" and v not in VALID_BITS:
            raise ValueError(f"must be 'same' or one of 1..8, 32; got {v}")
        return v

    def wire_bits(self, policy: BitsPolicy, bits: int) -> int:
        return bits if policy == "same" else int(policy)


class RuntimeSpec(Strict):
    """How the runtime runs the plan (CS/ES/SD processes). Optional; defaults suit one host."""

    host: str = "127.0.0.1"
    # the rendezvous port 'jqodi run' uses (None: a free one; --port overrides)
    port: Optional[Annotated[int, NoBool, Field(ge=1, le=65535)]] = None
    timeout_s: PosFloat = 120.0
    emulate: bool = True
    time_dilation: Union[Literal["auto"], Annotated[float, NoBool, Field(ge=1, allow_inf_nan=False)]] = "auto"


#: Where a request may be served: the end device alone, or split between it and an edge server.
SERVING_MODES = ("split", "end-only")


class ServingSpec(Strict):
    """The inference the fine-tuned model will serve (optional; absent = fine-tuning only).

    ``requests`` (expected requests after fine-tuning) or ``rate_per_s`` × ``duration_s``;
    ``latency_slo_s`` bounds the p95 latency of one request; ``devices`` lists the allowed
    serving modes (``split``: shallow blocks on the end device, deep ones on an edge server;
    ``end-only``: the whole model on the end device). See :mod:`jqodi.core.serving`.
    """

    requests: NonNegFloat | None = None
    rate_per_s: PosFloat | None = None
    duration_s: PosFloat | None = None
    latency_slo_s: PosFloat
    devices: list[Literal["split", "end-only"]] = Field(default_factory=lambda: list(SERVING_MODES),
                                                        min_length=1)

    @model_validator(mode="after")
    def _one_count(self):
        rate = self.rate_per_s is not None or self.duration_s is not None
        if self.requests is not None and rate:
            raise ValueError("give 'requests', or 'rate_per_s' with 'duration_s', not both")
        if self.requests is None and (self.rate_per_s is None or self.duration_s is None):
            raise ValueError("give 'requests', or 'rate_per_s' with 'duration_s'")
        if len(set(self.devices)) != len(self.devices):
            raise FieldProblem("devices", "serving modes must not repeat")
        return self

    @property
    def total_requests(self) -> float:
        """How many requests the model serves: ``requests`` or ``rate_per_s`` × ``duration_s``."""
        if self.requests is not None:
            return float(self.requests)
        return float(self.rate_per_s) * float(self.duration_s)  # type: ignore[arg-type]


# --- the scenario ---------------------------------------------------------------------------

class Scenario(Strict):
    """A validated scenario. ``bits`` is the paper's Ω (what JQODI searches); ``baseline_bits``
    are compiled too so the Full-Model (32) and Minimal-Model (1) baselines have candidates."""

    name: Name = "scenario"
    description: str = ""
    deadline_s: PosFloat
    target_loss: PosFloat
    cost_model: Literal["paper", "extended"] = "extended"
    #: extended model only: charge each node's idle power while it waits during an epoch
    idle_energy: bool = False
    data: DataSpec
    models: list[Annotated[ModelEntry, BeforeValidator(_entry_from_name)]] = Field(min_length=1)
    bits: list[Int] = Field(min_length=1)
    baseline_bits: list[Int] = Field(default_factory=list)
    cloud: CloudServer
    edges: list[EdgeServer] = Field(min_length=1)
    end_device: EndDevice
    training: TrainingSpec = TrainingSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    learning: list[LearningEstimate] = Field(default_factory=list)
    serving: ServingSpec | None = None
    timeline: list[TimelineEvent] = Field(default_factory=list)
    _source_dir: Path | None = PrivateAttr(default=None)
    _timeline: Timeline | None = PrivateAttr(default=None)
    # a fleet (jqodi.core.fleet): more end devices, with end_device as their template
    end_devices: list[EndDeviceEntry] = Field(default_factory=list)
    fleet: FleetSpec | None = None

    @field_validator("bits", "baseline_bits")
    @classmethod
    def _valid_bits(cls, v: list[int]) -> list[int]:
        for i, b in enumerate(v):
            if b not in VALID_BITS:
                raise ValueError(f"[{i}]: bit-width {b} is not one of 1..8, 32")
        if len(set(v)) != len(v):
            raise ValueError("bit-widths must not repeat")
        return v

    @field_validator("learning")
    @classmethod
    def _static_rows(cls, v: list[LearningEstimate]) -> list[LearningEstimate]:
        for i, row in enumerate(v):
            try:
                check_estimate(row)
            except ValueError as e:
                raise ValueError(f"[{i}]: {e}") from None
        return v

    @field_validator("models")
    @classmethod
    def _known_models(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        known = _known_model_names()
        names = [m.name for m in v]
        for i, n in enumerate(names):
            if n not in known:
                raise ValueError(f"[{i}].name: unknown model {n!r} (known: {', '.join(sorted(known))})")
            if names.index(n) != i:
                raise ValueError(f"[{i}].name: model {n!r} is listed twice")
        return v

    @field_validator("edges")
    @classmethod
    def _unique_edges(cls, v: list[EdgeServer]) -> list[EdgeServer]:
        names = [e.name for e in v]
        for i, n in enumerate(names):
            if names.index(n) != i:
                raise ValueError(f"[{i}].name: edge server {n!r} is listed twice")
        return v

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.idle_energy and self.cost_model != "extended":
            raise FieldProblem("idle_energy", "only the extended cost model counts idle power "
                                              "(the paper's Eq. (1)-(10) do not)")
        overlap = set(self.bits) & set(self.baseline_bits)
        if overlap:
            raise FieldProblem("baseline_bits", f"bit-width {min(overlap)} is already in 'bits'")
        models = {m.name for m in self.models}
        all_bits = set(self.bits) | set(self.baseline_bits)
        seen: set[tuple[str, int]] = set()
        for i, row in enumerate(self.learning):
            if row.model not in models:
                raise FieldProblem(f"learning[{i}].model",
                                    f"{row.model!r} is not one of the scenario's models ({', '.join(sorted(models))})")
            if row.bits not in all_bits:
                raise FieldProblem(f"learning[{i}].bits",
                                    f"{row.bits} is not one of the scenario's bit-widths {sorted(all_bits)}")
            if (row.model, row.bits) in seen:
                raise FieldProblem(f"learning[{i}]", f"duplicate row for ({row.model}, {row.bits} bits)")
            seen.add((row.model, row.bits))
        edges = [e.name for e in self.edges]
        for i, ev in enumerate(self.timeline):
            if getattr(ev, "edge", None) is not None and ev.edge not in edges:
                raise FieldProblem(f"timeline[{i}].edge", f"unknown edge server {ev.edge!r} (known: {', '.join(edges)})")
            if getattr(ev, "device", None) is not None and device_key(
                    ev.device, cloud=self.cloud.name, end=self.end_device.name, edges=edges) is None:
                raise FieldProblem(f"timeline[{i}].device", f"unknown device {ev.device!r} (known: cloud, end, "
                                                            f"{self.cloud.name}, {self.end_device.name}, {', '.join(edges)})")
        roles = [("cloud.name", self.cloud.name), ("end_device.name", self.end_device.name)]
        roles += [(f"edges[{i}].name", e.name) for i, e in enumerate(self.edges)]
        for i, (path, n) in enumerate(roles):
            other = next((p for p, m in roles[:i] if m == n), None)
            if other is not None:
                raise FieldProblem(path, f"{n!r} is already the name of {other}; the cloud, the edge "
                                          f"servers and the end device need distinct names")
        check_fleet(self)
        return self

    # conveniences ---------------------------------------------------------------------------
    @property
    def all_bits(self) -> list[int]:
        """Ω followed by the baseline bit-widths, in file order."""
        return list(self.bits) + list(self.baseline_bits)

    def edge(self, name: str) -> EdgeServer:
        for e in self.edges:
            if e.name == name:
                return e
        raise ScenarioError(f"edges: no edge server named {name!r} (have: {', '.join(e.name for e in self.edges)})")

    def model_entry(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise ScenarioError(f"models: no model named {name!r}")

    def estimates(self) -> list[LearningEstimate]:
        """The static learning table (:class:`LearningEstimate` records)."""
        return list(self.learning)

    def resolved_timeline(self, source: str = "scenario") -> Timeline:
        """The ``timeline:`` block with its trace files read (relative paths from the scenario
        file's folder); :func:`load_scenario` checks it, so bad trace files fail at load time."""
        if self._timeline is None:
            tl = resolve_timeline(self.timeline, cloud=self.cloud.name, end=self.end_device.name,
                                  edges=[e.name for e in self.edges], base_dir=self._source_dir, source=source)
            self._timeline = tl
        return self._timeline

    def with_changes(self, **changes) -> "Scenario":
        """A validated copy with top-level fields changed, keeping where the file came from."""
        d = self.model_dump()
        d.update(changes)
        out = Scenario.model_validate(d)
        out._source_dir = self._source_dir
        return out


def _known_model_names() -> set[str]:
    names = set(PAPER_MODELS)
    try:  # user-registered models live in the zoo registry (which needs torch)
        import sys

        if "jqodi.core.zoo.models" in sys.modules:
            names |= set(sys.modules["jqodi.core.zoo.models"].available_models())
    except Exception:  # pragma: no cover - defensive
        pass
    return names


# --- loading ----------------------------------------------------------------------------------

#: A scenario file is a few KiB; refuse to read more than this (a wrong path to a big file).
MAX_SCENARIO_BYTES = 16 * 2**20


def default_scenario_path() -> Path:
    """The Data 1 example (T_max = 180 s), shipped inside the package."""
    return Path(str(resources.files("jqodi") / "scenarios" / "paper-data1.yaml"))


#: A scenario path starting with this names a scenario shipped with the package (``jqodi:cpu-demo``).
PACKAGED_PREFIX = "jqodi:"


def packaged_scenarios() -> list[str]:
    """The names of the scenarios shipped with the package (``jqodi:NAME``)."""
    folder = resources.files("jqodi") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def scenario_path(path: str | Path) -> Path:
    """``path`` as a file: ``jqodi:NAME`` (or ``jqodi:NAME.yaml``) is the packaged scenario NAME
    (``jqodi:paper-data1``, ``jqodi:cpu-demo``); anything else is a path, as written."""
    text = str(path)
    if not text.startswith(PACKAGED_PREFIX):
        return Path(path)
    name = text[len(PACKAGED_PREFIX):].removesuffix(".yaml")
    known = packaged_scenarios()
    if name not in known:
        raise ScenarioError(f"{text}: no packaged scenario {name!r} (packaged: "
                            f"{', '.join(PACKAGED_PREFIX + k for k in known)})")
    return Path(str(resources.files("jqodi") / "scenarios" / f"{name}.yaml"))


def parse_scenario(data: Any, source: str = "scenario", base_dir: str | Path | None = None) -> Scenario:
    """Validate an already-parsed mapping. Errors name ``source`` and the field path.
    ``base_dir``: the file's folder, where relative ``device:`` and ``data`` paths are read
    (without it, relative data paths stay as written: the current directory's)."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: (top level): expected a mapping of fields, got "
                            f"{type(data).__name__ if data is not None else 'an empty document'}")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ScenarioError(f"{source}: {bad_keys[0]!r}: field names must be strings")
    notes: list[str] = []
    try:
        out = Scenario.model_validate(data, context={"base_dir": base_dir, "notes": notes})
        for note in notes:
            _warn_once(f"warning: {source}: {note}")
        return out
    except ValidationError as e:
        # the first problem pydantic reports; the alternatives of a union share its path
        raise ScenarioError(f"{source}: {error_line(e)}") from None
    except FieldProblem as e:  # pragma: no cover - pydantic wraps these, kept for safety
        raise ScenarioError(one_line(f"{source}: {e.path}: {e.problem}")) from None
    except (TypeError, ValueError, RecursionError) as e:  # exotic input pydantic cannot wrap
        raise ScenarioError(one_line(f"{source}: (top level): {e}")) from None


_WARNED: set[str] = set()


def _warn_once(line: str) -> None:
    """A warning about a scenario file on stderr, once per process (a file is often loaded twice)."""
    if line not in _WARNED:
        _WARNED.add(line)
        print(one_line(line), file=sys.stderr)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    ``path`` may be ``jqodi:NAME``, a scenario shipped with the package (:func:`scenario_path`).
    Raises :class:`ScenarioError` with one line ``<file>: <field.path>: <problem>``.
    """
    path = scenario_path(path)
    raw = read_user_file(path, MAX_SCENARIO_BYTES, "scenario file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: unreadable: not UTF-8 text (byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ScenarioError(one_line(f"{path}: (yaml): {where}{problem}")) from None
    except (RecursionError, ValueError, TypeError) as e:
        raise ScenarioError(one_line(f"{path}: (yaml): {e}")) from None
    if is_pipe(path):  # /dev/stdin, <(cat s.yaml): no folder of its own to read relative paths from
        base_dir = Path.cwd()
        _warn_once(f"note: {path}: read from a pipe: relative paths in it (device files, data, traces) "
                   f"are read from the working directory {base_dir}")
    else:
        base_dir = path.resolve().parent
    scenario = parse_scenario(data, str(path), base_dir)
    scenario._source_dir = base_dir
    scenario.resolved_timeline(str(path))
    return scenario
