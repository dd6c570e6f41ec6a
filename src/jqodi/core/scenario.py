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

Units: FLOP/s, J/FLOP, W, bit/s, J/bit, Hz, dB, GiB, seconds. Numbers may be written in YAML
as ``1.0e9`` or ``1e9`` (a string such as ``"1e9"`` is read as a number).
"""
from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jqodi.errors import ScenarioError
from jqodi.core.estimates import LearningEstimate

__all__ = [
    "Scenario", "DeviceSpec", "CloudServer", "EdgeServer", "EndDevice", "CloudLink", "WirelessLink",
    "DataSpec", "ModelEntry", "TrainingSpec", "RuntimeSpec", "LearningRow",
    "load_scenario", "parse_scenario", "default_scenario_path", "PAPER_MODELS", "VALID_BITS",
]

#: Bit-widths a candidate may use: 1..8 (fake-quantized) and 32 (full precision).
VALID_BITS = frozenset(range(1, 9)) | {32}
#: The paper's models (always known, even before the zoo — and torch — is imported).
PAPER_MODELS = ("lenet", "vgg", "resnet20")

def _no_bool(v: Any) -> Any:
    """YAML's true/false are not numbers here (pydantic would read them as 1/0)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    return v


NoBool = BeforeValidator(_no_bool)
PosFloat = Annotated[float, NoBool, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, NoBool, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, NoBool, Field(allow_inf_nan=False)]
PosInt = Annotated[int, NoBool, Field(gt=0)]
Int = Annotated[int, NoBool]
#: Dataset sizes: positive and at most 10^9 (beyond that the FLOP counts stop being exact floats).
SampleCount = Annotated[int, NoBool, Field(gt=0, le=10**9)]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _check_name(v: str) -> str:
    if not _NAME.fullmatch(v):
        raise ValueError(f"names use ASCII letters, digits, '_', '.' and '-', starting with a letter "
                         f"or digit (got {v!r})")
    return v


Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_name)]


def _exactly_one(spec: BaseModel, a: str, b: str) -> None:
    """Two ways to give one quantity (e.g. ε as J/FLOP or as busy power): exactly one is set."""
    if (getattr(spec, a) is None) == (getattr(spec, b) is None):
        raise ValueError(f"give exactly one of '{a}' and '{b}'")


def _per_unit(direct: float | None, power_w: float | None, rate: float) -> float:
    """Energy per unit of work: given directly, or power / rate (J/FLOP = W / (FLOP/s))."""
    return direct if direct is not None else power_w / rate  # type: ignore[operator]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --- devices -----------------------------------------------------------------------------------

class DeviceSpec(_Strict):
    """A compute node: speed v (FLOP/s) and energy per FLOP ε (J/FLOP), plus memory.

    Give the speed either as ``flops`` (effective FLOP/s) or as ``peak_flops`` × ``utilization``
    (the fraction of the spec-sheet peak that training actually reaches). Give the energy either
    as ``energy_per_flop_j`` or as ``busy_power_w`` (then ε = P / v). ``bit_speedup`` maps a
    bit-width to a compute speed-up on this device (integer kernels); default 1.0 for every
    bit-width, because fake-quantized training is not faster than fp32.
    """

    name: Name
    flops: PosFloat | None = None
    peak_flops: PosFloat | None = None
    utilization: Annotated[float, NoBool, Field(gt=0, le=1)] | None = None
    energy_per_flop_j: PosFloat | None = None
    busy_power_w: PosFloat | None = None
    idle_power_w: NonNegFloat | None = None
    memory_gib: PosFloat = 8.0
    bit_speedup: dict[Int, PosFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _speed_and_energy(self):
        if self.flops is None and (self.peak_flops is None or self.utilization is None):
            raise ValueError("give the speed as 'flops', or as 'peak_flops' with 'utilization'")
        if self.flops is not None and self.peak_flops is not None and self.utilization is not None:
            raise ValueError("give 'flops' or 'peak_flops' × 'utilization', not both")
        _exactly_one(self, "energy_per_flop_j", "busy_power_w")
        return self

    @field_validator("bit_speedup")
    @classmethod
    def _speedup_bits(cls, v: dict[int, float]) -> dict[int, float]:
        bad = sorted(b for b in v if b not in VALID_BITS)
        if bad:
            raise ValueError(f"bit-width {bad[0]} is not one of 1..8, 32")
        return v

    @property
    def speed_flops(self) -> float:
        """v: effective FLOP/s."""
        if self.flops is not None:
            return self.flops
        return self.peak_flops * self.utilization  # type: ignore[operator]

    @property
    def joules_per_flop(self) -> float:
        """ε: J/FLOP (``busy_power_w / speed`` when the power is given)."""
        return _per_unit(self.energy_per_flop_j, self.busy_power_w, self.speed_flops)

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    def speedup(self, bits: int) -> float:
        return self.bit_speedup.get(bits, 1.0)


class CloudServer(DeviceSpec):
    """The CS. Its per-epoch work (the paper's F_a in Eq. (7)–(8)) is folding the returned
    model into the fp32 master and re-quantizing it: ``update_flops_per_param`` × parameters.
    The one-off quantization τ_(a,q), ε_(a,q) is ``quantize_flops_per_param`` × parameters of
    CS work (zero for 32 bits: nothing to quantize)."""

    update_flops_per_param: NonNegFloat = 10.0
    quantize_flops_per_param: NonNegFloat = 10.0


class CloudLink(_Strict):
    """CS ↔ ES wired link: rate v_(c,x) in bit/s and energy ε_(c,x) per bit
    (or ``power_w``, then ε = P / rate). ``up: false`` marks the link down (every option via
    this edge is infeasible)."""

    rate_bps: PosFloat
    energy_per_bit_j: NonNegFloat | None = None
    power_w: NonNegFloat | None = None
    up: bool = True

    @model_validator(mode="after")
    def _energy(self):
        _exactly_one(self, "energy_per_bit_j", "power_w")
        return self

    @property
    def joules_per_bit(self) -> float:
        """ε_(c,x) = ``energy_per_bit_j``, or ``power_w`` / rate."""
        return _per_unit(self.energy_per_bit_j, self.power_w, self.rate_bps)


class WirelessLink(_Strict):
    """ES ↔ SD wireless link. Rate v_(x,y) = b · log2(1 + σ) (Shannon), b in Hz and σ the
    linear SNR (give ``snr_db`` or ``snr``). Energy per bit ε_(x,y) = ``tx_power_w`` / rate,
    or ``energy_per_bit_j`` directly."""

    bandwidth_hz: PosFloat
    snr_db: FiniteFloat | None = None
    snr: PosFloat | None = None
    tx_power_w: PosFloat | None = None
    energy_per_bit_j: NonNegFloat | None = None
    up: bool = True

    @model_validator(mode="after")
    def _one_of_each(self):
        _exactly_one(self, "snr_db", "snr")
        _exactly_one(self, "tx_power_w", "energy_per_bit_j")
        if self.snr_db is not None and not -30 <= self.snr_db <= 90:
            raise ValueError(f"snr_db must be within -30..90 dB, got {self.snr_db}")
        return self

    @property
    def snr_linear(self) -> float:
        return self.snr if self.snr is not None else 10 ** (self.snr_db / 10)  # type: ignore[operator]

    @property
    def rate_bps(self) -> float:
        """v_(x,y) = b · log2(1 + σ)."""
        return self.bandwidth_hz * math.log2(1 + self.snr_linear)

    @property
    def joules_per_bit(self) -> float:
        """ε_(x,y) = ``energy_per_bit_j``, or ``tx_power_w`` / rate."""
        return _per_unit(self.energy_per_bit_j, self.tx_power_w, self.rate_bps)


class EdgeServer(DeviceSpec):
    """An ES with its link to the cloud and its wireless link to the end device."""

    cloud_link: CloudLink
    end_link: WirelessLink
    available: bool = True


class EndDevice(DeviceSpec):
    """The SD that owns the private data and runs the shallow layers."""


# --- data, models, training, runtime -------------------------------------------------------

def _three_sizes(v: Any) -> Any:
    if isinstance(v, (list, tuple)) and len(v) != 3:
        raise ValueError(f"expected 3 sizes [C, H, W], got {len(v)}")
    return v


class DataSpec(_Strict):
    """The end device's private data: which dataset and split, how many samples."""

    dataset: Literal["fashion-mnist", "cifar10", "cifar100"] = "cifar10"
    split: Literal["data1", "data2"] = "data1"
    train_size: SampleCount
    val_size: SampleCount
    input_shape: Annotated[tuple[PosInt, PosInt, PosInt], BeforeValidator(_three_sizes)] = (3, 32, 32)
    num_classes: Annotated[int, NoBool, Field(ge=2, le=1_000_000)] = 10


class ModelEntry(_Strict):
    """A candidate model M_a: a registered zoo name and a width multiplier (1.0 = paper size)."""

    name: Name
    width: Annotated[float, NoBool, Field(gt=0, le=16, allow_inf_nan=False)] = 1.0


def _entry_from_name(v: Any) -> Any:
    """``models: [lenet, vgg]`` is short for ``models: [{name: lenet}, {name: vgg}]``."""
    return {"name": v} if isinstance(v, str) else v


BitsPolicy = Union[Literal["same"], Annotated[int, NoBool, Field(ge=1, le=32)]]


class TrainingSpec(_Strict):
    """Fine-tuning hyper-parameters, and the precision of the cut-layer traffic.

    ``act_bits``/``grad_bits``: bits per element of the cut-layer activations (SD → ES) and of
    their gradients (ES → SD) on the wire; ``"same"`` means the candidate's weight bit-width
    (32 for the full-precision model). Only the ``extended`` cost model counts this traffic.
    """

    batch_size: PosInt = 64
    # Defaults are jqodi.core.training.TrainConfig's (Adam at 1e-4: what fine-tuning a pretrained,
    # freshly quantized model needed in docs/learning.md); the runtime and the reference use them.
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PosFloat = 1e-4
    momentum: Annotated[float, NoBool, Field(ge=0, lt=1)] = 0.9
    weight_decay: NonNegFloat = 0.0
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


class RuntimeSpec(_Strict):
    """How the runtime runs the plan (CS/ES/SD processes). Optional; defaults suit one host."""

    host: str = "127.0.0.1"
    port: Annotated[int, NoBool, Field(ge=1, le=65535)] = 29500
    timeout_s: PosFloat = 120.0
    emulate: bool = True
    time_dilation: Union[Literal["auto"], Annotated[float, NoBool, Field(ge=1, allow_inf_nan=False)]] = "auto"


class LearningRow(_Strict):
    """One row of the static learning-estimate table; the fields of
    :class:`jqodi.core.estimates.LearningEstimate` (``null`` epochs = the paper's ∞)."""

    model: Name
    bits: Int
    base_loss: NonNegFloat
    gamma: FiniteFloat
    epochs_expected: PosInt | None
    epochs_robust: PosInt | None
    target_loss: PosFloat | None = None
    gamma_robust: FiniteFloat | None = None
    final_loss_expected: NonNegFloat | None = None
    final_loss_robust: NonNegFloat | None = None
    source: str = "static"

    @model_validator(mode="after")
    def _consistent(self):
        if self.bits not in VALID_BITS:
            raise ValueError(f"bits {self.bits} is not one of 1..8, 32")
        if (self.epochs_expected is None) != (self.epochs_robust is None):
            raise ValueError("epochs_expected and epochs_robust must both be numbers or both null")
        if self.epochs_expected is not None and self.epochs_robust < self.epochs_expected:  # type: ignore[operator]
            raise ValueError(f"epochs_robust ({self.epochs_robust}) must be ≥ epochs_expected "
                             f"({self.epochs_expected})")
        return self

    def to_estimate(self) -> LearningEstimate:
        return LearningEstimate(**self.model_dump())


# --- the scenario ---------------------------------------------------------------------------

class Scenario(_Strict):
    """A validated scenario. ``bits`` is the paper's Ω (what JQODI searches); ``baseline_bits``
    are compiled too so the Full-Model (32) and Minimal-Model (1) baselines have candidates."""

    name: Name = "scenario"
    description: str = ""
    deadline_s: PosFloat
    target_loss: PosFloat
    cost_model: Literal["paper", "extended"] = "extended"
    data: DataSpec
    models: list[Annotated[ModelEntry, BeforeValidator(_entry_from_name)]] = Field(min_length=1)
    bits: list[Int] = Field(min_length=1)
    baseline_bits: list[Int] = Field(default_factory=list)
    cloud: CloudServer
    edges: list[EdgeServer] = Field(min_length=1)
    end_device: EndDevice
    training: TrainingSpec = TrainingSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    learning: list[LearningRow] = Field(default_factory=list)

    @field_validator("bits", "baseline_bits")
    @classmethod
    def _valid_bits(cls, v: list[int]) -> list[int]:
        for i, b in enumerate(v):
            if b not in VALID_BITS:
                raise ValueError(f"[{i}]: bit-width {b} is not one of 1..8, 32")
        if len(set(v)) != len(v):
            raise ValueError("bit-widths must not repeat")
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
        overlap = set(self.bits) & set(self.baseline_bits)
        if overlap:
            raise _FieldProblem("baseline_bits", f"bit-width {min(overlap)} is already in 'bits'")
        models = {m.name for m in self.models}
        all_bits = set(self.bits) | set(self.baseline_bits)
        seen: set[tuple[str, int]] = set()
        for i, row in enumerate(self.learning):
            if row.model not in models:
                raise _FieldProblem(f"learning[{i}].model",
                                    f"{row.model!r} is not one of the scenario's models ({', '.join(sorted(models))})")
            if row.bits not in all_bits:
                raise _FieldProblem(f"learning[{i}].bits",
                                    f"{row.bits} is not one of the scenario's bit-widths {sorted(all_bits)}")
            if (row.model, row.bits) in seen:
                raise _FieldProblem(f"learning[{i}]", f"duplicate row for ({row.model}, {row.bits} bits)")
            seen.add((row.model, row.bits))
        roles = [("cloud.name", self.cloud.name), ("end_device.name", self.end_device.name)]
        roles += [(f"edges[{i}].name", e.name) for i, e in enumerate(self.edges)]
        for i, (path, n) in enumerate(roles):
            other = next((p for p, m in roles[:i] if m == n), None)
            if other is not None:
                raise _FieldProblem(path, f"{n!r} is already the name of {other}; the cloud, the edge "
                                          f"servers and the end device need distinct names")
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
        """The static learning table as :class:`LearningEstimate` records."""
        return [r.to_estimate() for r in self.learning]


class _FieldProblem(ValueError):
    """Raised in model validators to name a nested field path precisely."""

    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path = path
        self.problem = problem


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


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic adds union-member tags ("int", "literal['same']", "function-after[...]")
            if out and (part.startswith(("literal[", "function-", "int", "float", "str", "bool",
                                         "constrained-", "tuple[", "list[", "dict[", "none"))
                        or part in ("int", "float")):
                continue
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _problem(err: dict) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    msg = err.get("msg", "invalid")
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    exc = ctx.get("error")
    if isinstance(exc, _FieldProblem):
        return exc.path, exc.problem
    if etype == "missing":
        return _format_loc(loc), "missing field"
    if etype == "extra_forbidden":
        return _format_loc(loc), "unknown field"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if len(loc) >= 2 and loc[-1] == "[key]":  # a bad key of a mapping (e.g. bit_speedup)
        loc, msg = loc[:-2], f"key {loc[-2]!r}: {msg}"
    path = _format_loc(loc)
    # validators that name a sub-path put it first: "[3].name: unknown model ..."
    if msg.startswith("[") and "]" in msg and ": " in msg:
        sub, _, rest = msg.partition(": ")
        return path + sub, rest
    if etype == "too_short" and loc and not isinstance(loc[-1], int) and "input_shape" in str(loc[-1]):
        return path, msg
    inp = err.get("input")
    if "got " not in msg and not isinstance(inp, (dict, list)) and inp is not None:
        shown = repr(inp)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        msg = f"{msg} (got {shown})"
    return path, msg


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    """Validate an already-parsed mapping. Errors name ``source`` and the field path."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: (top level): expected a mapping of fields, got "
                            f"{type(data).__name__ if data is not None else 'an empty document'}")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ScenarioError(f"{source}: {bad_keys[0]!r}: field names must be strings")
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        # the first problem pydantic reports; the alternatives of a union share its path
        path, problem = _problem(errors[0])
        same = [_problem(x) for x in errors[1:]]
        alts = [p for q, p in same if q == path and p != problem]
        if alts:
            problem = " or ".join(dict.fromkeys([problem, *alts]))
        rest = len(errors) - 1 - len(alts)
        more = f" (+{rest} more)" if rest > 0 else ""
        raise ScenarioError(_one_line(f"{source}: {path}: {problem}{more}")) from None
    except _FieldProblem as e:  # pragma: no cover - pydantic wraps these, kept for safety
        raise ScenarioError(_one_line(f"{source}: {e.path}: {e.problem}")) from None
    except (TypeError, ValueError, RecursionError) as e:  # exotic input pydantic cannot wrap
        raise ScenarioError(_one_line(f"{source}: (top level): {e}")) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario YAML file.

    Raises :class:`ScenarioError` with one line ``<file>: <field.path>: <problem>``.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(path)
        if path.exists() and not path.is_file():  # /dev/zero, a FIFO: reading would never end
            raise ScenarioError(f"{path}: not a regular file")
        with path.open("rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
        if len(raw) > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{path}: larger than {MAX_SCENARIO_BYTES // 2**20} MiB, not a scenario file")
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a scenario file") from None
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: unreadable: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ScenarioError(_one_line(f"{path}: unreadable: {e.strerror or e}")) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ScenarioError(_one_line(f"{path}: (yaml): {where}{problem}")) from None
    except (RecursionError, ValueError, TypeError) as e:
        raise ScenarioError(_one_line(f"{path}: (yaml): {e}")) from None
    return parse_scenario(data, str(path))
