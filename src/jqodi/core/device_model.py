"""Device models richer than one number: per-layer-type rooflines, a per-bit compute factor,
busy and idle power — and the device files (YAML) that hold them.

A device file describes one machine::

    name: pi5
    source: fitted            # spec-sheet | measured (jqodi calibrate) | fitted (to the paper)
    flops: 2.2e10             # v (FLOP/s): what the `paper` cost model (Eq. (7)) uses
    busy_power_w: 12          # P while computing (ε = P / v in the paper model)
    idle_power_w: 3.75        # P while waiting for a peer (extended model, `idle_energy: true`)
    power: declared           # measured (NVML/RAPL) or declared (rated/TDP figures)
    memory_gib: 8
    bit_time_factor: {8: 1.1} # s(q): time of a conv/linear at q bits ÷ its fp32 time
    layers:                   # t = max(flops / flops_per_s, bytes / bytes_per_s) + overhead_s
      conv:     {forward: {flops_per_s: 3e10, bytes_per_s: 8e9, overhead_s: 2e-5}, backward: {...}}
      linear:   {...}
      norm:     {...}         # batch norms
      eltwise:  {...}         # activations, pools, residual adds
      quantizer: {...}        # QAT's fake quantizers (weights and inputs of every conv/linear)
    calibration:              # what `jqodi calibrate` measured (free-form, but for:)
      model_scale: {lenet@1: {train: 0.9, eval: 1.6}, resnet20@0.25: 1.13}   # optional, see below

For one call of a layer over a batch of b samples (:class:`jqodi.core.profile.LayerWork`) the
roofline reads ``flops = b · f`` and ``bytes = 4 · (b · (in + out) + params)``. Backward
rooflines are expressed against the same *forward* FLOPs and bytes (so a backward twice as
costly as the forward shows as half the forward's ``flops_per_s``). A layer type the file does
not list runs at ``flops`` with no memory bound (backward at ``flops / 2``), which is exactly the
paper's d^i / v for that layer (an unlisted ``quantizer`` costs nothing, as in d^i). A file with no ``layers`` at all is the simplest device.

``calibration.model_scale`` (optional; ``jqodi calibrate`` writes it) is the per-model
composition: for each model it timed (key ``<model>@<width>``), its measured whole fp32 training
step ÷ the step its rooflines sum to (``train``) and its measured validation forward ÷ its sum
(``eval``; a bare number is both phases, a phase not given is 1) (layers do not add up to a model the same way for every
model: framework overhead between layers, memory reuse, autograd graph size). The extended cost
model multiplies that model's layer-roofline times on that device by it
(:meth:`DeviceModel.for_model`); a model without an entry, and every file without the field
(spec-sheet and fitted devices), is priced unscaled.

Files live in a small library: the packaged ``jqodi/devices/*.yaml`` (pi5, rtx3090, rtx4090,
a100) and ``<JQODI_HOME>/devices/*.yaml`` (what ``jqodi calibrate`` writes). A scenario names
one by ``device: NAME`` or ``device: path/to/file.yaml`` (relative to the scenario's folder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from jqodi.core.devices import Device, check_bit_keys
from jqodi.core.profile import LAYER_KINDS, BlockProfile, LayerWork
from jqodi.core.validation import (Int, Name, NonNegFloat, PosFloat, Strict, error_line,
                                   one_line)
from jqodi.core.userfile import read_user_file
from jqodi.errors import ScenarioError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Roofline", "LayerModel", "DeviceFile", "DeviceModel", "load_device_file", "resolve_device_ref",
           "is_library_name", "device_from_dict", "PASSES", "model_scale_key",
           "library_devices", "packaged_devices_dir", "user_devices_dir", "dump_device_file"]

MAX_DEVICE_FILE_BYTES = 4 * 2**20

#: The phases ``calibration.model_scale`` may give a model a factor for: its training steps
#: (forward, backward, Adam) and its validation forwards (eval mode, no autograd graph).
SCALE_PHASES = ("train", "eval")

#: The passes of one training step (:meth:`DeviceModel.step_time_s`).
PASSES = ("forward", "backward", "step")


class Roofline(Strict):
    """``t = max(flops / flops_per_s, bytes / bytes_per_s) + calls · overhead_s``."""

    flops_per_s: PosFloat
    bytes_per_s: PosFloat
    overhead_s: NonNegFloat = 0.0

    def time_s(self, flops: float, nbytes: float, calls: float = 1.0) -> float:
        return max(flops / self.flops_per_s, nbytes / self.bytes_per_s) + calls * self.overhead_s


class LayerModel(Strict):
    """The forward and backward rooflines of one layer type."""

    forward: Roofline
    backward: Roofline


class DeviceFile(Strict):
    """A validated device file (see the module docstring)."""

    name: Name
    description: str = ""
    source: Literal["spec-sheet", "measured", "fitted"] = "spec-sheet"
    flops: PosFloat
    busy_power_w: PosFloat
    idle_power_w: NonNegFloat | None = None
    power: Literal["measured", "declared"] = "declared"
    memory_gib: PosFloat = 8.0
    bit_time_factor: dict[Int, PosFloat] = Field(default_factory=dict)
    layers: dict[str, LayerModel] = Field(default_factory=dict)
    calibration: dict[str, Any] | None = None

    @field_validator("calibration")
    @classmethod
    def _model_scale(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        from jqodi.core.validation import FieldProblem

        scales = (v or {}).get("model_scale")
        if scales is None:
            return v
        if not isinstance(scales, dict):
            raise FieldProblem("calibration.model_scale", "expected a mapping of <model>@<width> to a factor")
        for key, entry in scales.items():
            where = f"calibration.model_scale.{key}"
            if not isinstance(key, str) or "@" not in key:
                raise FieldProblem(where, "expected a key <model>@<width> (e.g. resnet20@0.25)")
            if isinstance(entry, dict):
                extra = set(entry) - set(SCALE_PHASES)
                if extra or not entry:
                    raise FieldProblem(where, f"expected phases {' and/or '.join(SCALE_PHASES)}"
                                              + (f", got {sorted(map(str, extra))}" if extra else ""))
                items = [(f"{where}.{ph}", f) for ph, f in entry.items()]
            else:
                items = [(where, entry)]
            for w, f in items:
                if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0):
                    raise FieldProblem(w, f"expected a positive finite factor, got {f!r}")
        return v

    @field_validator("layers", mode="before")
    @classmethod
    def _known_kinds(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for k in v:
                if k not in LAYER_KINDS:
                    raise ValueError(f"unknown layer type {k!r} (known: {', '.join(LAYER_KINDS)})")
        return v

    @field_validator("bit_time_factor")
    @classmethod
    def _bits(cls, v: dict[int, float]) -> dict[int, float]:
        return check_bit_keys(v)

    @model_validator(mode="after")
    def _idle_below_busy(self):
        if self.idle_power_w is not None and self.idle_power_w >= self.busy_power_w:
            from jqodi.core.validation import FieldProblem

            raise FieldProblem("idle_power_w", f"must be below busy_power_w ({self.busy_power_w:g} W), "
                                               f"got {self.idle_power_w:g}")
        return self

    def device(self, name: str | None = None, memory_gib: float | None = None,
               idle_power_w: float | None = None) -> "DeviceModel":
        return DeviceModel(name or self.name, self.flops, self.busy_power_w / self.flops,
                           (memory_gib or self.memory_gib) * 2**30,
                           {q: 1.0 / f for q, f in self.bit_time_factor.items()},
                           self.idle_power_w if idle_power_w is None else idle_power_w,
                           layers=dict(self.layers), bit_time_factor=dict(self.bit_time_factor),
                           source=self.source,
                           model_scale={k: _phases(f) for k, f in
                                        ((self.calibration or {}).get("model_scale") or {}).items()})


def _phases(entry) -> dict[str, float]:
    """A ``model_scale`` entry as ``{train: k, eval: k}`` (a bare number is both; a phase not
    given is 1)."""
    if isinstance(entry, dict):
        return {ph: float(entry.get(ph, 1.0)) for ph in SCALE_PHASES}
    return {ph: float(entry) for ph in SCALE_PHASES}


def model_scale_key(model: str, width: float) -> str:
    """The key of ``calibration.model_scale`` for ``model`` at ``width``: ``resnet20@0.25``."""
    return f"{model}@{float(width):g}"


@dataclass(frozen=True)
class DeviceModel(Device):
    """A :class:`Device` with per-layer-type rooflines and a per-bit compute factor s(q).

    ``flops``, ``joules_per_flop`` and ``bit_speedup`` (= 1 / s(q)) keep the paper's
    Eq. (7)–(8) meaning; :meth:`part_time_s` is the extended model's compute time."""

    layers: dict[str, LayerModel] = field(default_factory=dict)
    bit_time_factor: dict[int, float] = field(default_factory=dict)
    source: str = "spec-sheet"
    model_scale: dict[str, dict[str, float]] = field(default_factory=dict)  # calibration.model_scale, per phase
    composition_scale: dict[str, float] = field(default_factory=dict)  # this model's, bound by :meth:`for_model`

    def for_model(self, model: str, width: float) -> "DeviceModel":
        """This device pricing ``model`` at ``width``: its layer-roofline times × the file's
        ``calibration.model_scale`` entry for that model (this device's measured whole training
        step, and validation forward, ÷ its layers' sum), or unscaled when the file has none."""
        k = self.model_scale.get(model_scale_key(model, width), {})
        return self if k == self.composition_scale else replace(self, composition_scale=dict(k))

    def to_dict(self) -> dict:
        """This model as a device file's fields (JSON-able; :func:`device_from_dict` reads it back):
        how a job carries an emulated device's rooflines to the role processes."""
        return {"name": self.name, "source": self.source, "flops": self.flops, "busy_power_w": self.busy_power_w,
                **({"idle_power_w": self.idle_power_w} if self.idle_power_w is not None else {}),
                "bit_time_factor": dict(self.bit_time_factor),
                "layers": {k: v.model_dump() for k, v in self.layers.items()},
                **({"calibration": {"model_scale": dict(self.model_scale)}} if self.model_scale else {})}

    def time_factor(self, bits: int) -> float:
        """s(q): a conv/linear layer's time at ``bits`` ÷ its fp32 time (1 for 32 bits)."""
        return 1.0 if bits >= 32 else float(self.bit_time_factor.get(bits, 1.0))

    def _roofline(self, kind: str, phase: str) -> Roofline:
        lm = self.layers.get(kind)
        if lm is not None:
            return lm.forward if phase == "forward" else lm.backward
        v = self.flops if phase == "forward" else self.flops / 2
        return Roofline.model_construct(flops_per_s=v, bytes_per_s=math.inf, overhead_s=0.0)

    def layer_time_s(self, w: LayerWork, batch: int, bits: int, phase: str) -> float:
        """One call of layer ``w`` over ``batch`` samples (``phase`` forward or backward)."""
        if w.kind == "quantizer" and (bits >= 32 or w.kind not in self.layers):
            return 0.0  # not listed: the paper's d^i counts no quantizer work
        t = self._roofline(w.kind, phase).time_s(w.flops_at(batch), w.bytes_at(batch))
        return t * self.time_factor(bits) if w.kind in ("conv", "linear") else t

    def step_time_s(self, blocks: Iterable[BlockProfile], batch: int, bits: int,
                    passes: Iterable[str] = PASSES, validation: bool = False) -> float:
        """One training step of ``blocks`` over ``batch`` samples: the ``passes`` it runs among
        ``forward``, ``backward`` (each layer's roofline) and ``step`` (one Adam step over the
        blocks' parameters). What the runtime's emulation pads each compute step to, and what
        :meth:`block_epoch_time_s` sums over an epoch — one model for the planner and the
        emulator. A block profiled without its layers falls back to Eq. (7): forward f·b / v,
        backward 2·f·b / v (the paper's d^i counts 3 forward FLOPs per training sample). The
        layers' time is × the model's ``composition_scale`` (bound by :meth:`for_model`): its
        ``eval`` factor for a ``validation`` forward, else its ``train`` factor."""
        passes = tuple(passes)
        total = layered = 0.0
        for blk in blocks:
            if not blk.layers:
                passes_f = ("forward" in passes) + 2.0 * ("backward" in passes)
                total += passes_f * batch * blk.flops / (self.flops * self.speedup(bits))
                continue
            if "step" in passes:
                layered += self.optimizer_step_s(blk)
            for phase in ("forward", "backward"):
                if phase in passes:
                    layered += sum(self.layer_time_s(w, batch, bits, phase) for w in blk.layers)
        return total + self.composition_scale.get("eval" if validation else "train", 1.0) * layered

    def block_epoch_time_s(self, block: BlockProfile, n_train: int, n_val: int, batch: int,
                           eval_batch: int, bits: int) -> float:
        """One epoch of ``block``: forward + backward + an optimizer step per training batch of
        ``batch``, then forward over the validation set in batches of ``eval_batch``."""
        return (sum(count * self.step_time_s([block], b, bits) for b, count in _batches(n_train, batch))
                + sum(count * self.step_time_s([block], b, bits, ("forward",), validation=True)
                      for b, count in _batches(n_val, eval_batch)))

    def optimizer_step_s(self, block: BlockProfile) -> float:
        """One Adam step over the block's parameters (read p, g, m, v; write p, m, v: ~10
        FLOP and 28 bytes per parameter) on the element-wise roofline; 0 when the file does
        not list ``eltwise`` (the paper's d^i has no optimizer)."""
        if block.params == 0 or "eltwise" not in self.layers:
            return 0.0
        p = block.params
        return self.layers["eltwise"].forward.time_s(10.0 * p, 28.0 * p)

    def part_time_s(self, blocks: Iterable[BlockProfile], n_train: int, n_val: int, batch: int,
                    eval_batch: int, bits: int) -> float:
        """Compute time of one epoch of the blocks a part holds (the extended Eq. (7) term)."""
        return sum(self.block_epoch_time_s(b, n_train, n_val, batch, eval_batch, bits) for b in blocks)


def device_from_dict(d: dict) -> DeviceModel:
    """A :class:`DeviceModel` from :meth:`DeviceModel.to_dict` (validated like a device file)."""
    return DeviceFile.model_validate(d).device()


def _batches(n: int, batch: int) -> list[tuple[int, int]]:
    """(batch size, how many) covering ``n`` samples: full batches and the remainder."""
    full, rest = divmod(n, batch)
    out = [(batch, full)] if full else []
    if rest:
        out.append((rest, 1))
    return out


# --- the library ------------------------------------------------------------------------------

def packaged_devices_dir() -> Path:
    return Path(str(resources.files("jqodi") / "devices"))


def user_devices_dir() -> Path:
    from jqodi.core.paths import jqodi_home

    return jqodi_home() / "devices"


def library_devices() -> dict[str, Path]:
    """Every device of the library by name; the user's files win over the packaged ones."""
    out: dict[str, Path] = {}
    for d in (packaged_devices_dir(), user_devices_dir()):
        if d.is_dir():
            for p in sorted(d.glob("*.yaml")):
                out[p.stem] = p
    return out


def is_library_name(ref: str) -> bool:
    """``pi5`` names a library device; anything with a slash or a .yaml/.yml suffix is a path."""
    return not ("/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml")))


def resolve_device_ref(ref: str, base_dir: str | Path | None = None) -> Path:
    """A library name (``pi5``) or a path (relative to ``base_dir``, then to the working dir)."""
    if is_library_name(ref):
        lib = library_devices()
        if ref in lib:
            return lib[ref]
        raise ScenarioError(f"unknown device {ref!r} (library: {', '.join(sorted(lib)) or 'empty'}; "
                            f"or give a path to a .yaml file)")
    p = Path(ref).expanduser()
    if not p.is_absolute() and base_dir is not None and (Path(base_dir) / p).exists():
        p = Path(base_dir) / p
    return p


def load_device_file(ref: str | Path, base_dir: str | Path | None = None) -> DeviceFile:
    """Read and validate a device file; any problem is one line ``<file>: <field>: <problem>``."""
    path = resolve_device_ref(str(ref), base_dir)
    raw = read_user_file(path, MAX_DEVICE_FILE_BYTES, "device file")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: unreadable: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ScenarioError(one_line(f"{path}: (yaml): {getattr(e, 'problem', None) or e}")) from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: (top level): expected a mapping of fields")
    try:
        return DeviceFile.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(f"{path}: {error_line(e)}") from None


def dump_device_file(dev: DeviceFile, path: str | Path, header: str = "") -> Path:
    """Write ``dev`` as YAML atomically (a temporary file renamed over ``path``)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dev.model_dump(mode="python", exclude_none=True)
    text = header + yaml.safe_dump(data, sort_keys=False, width=110)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- fitting ----------------------------------------------------------------------------------

def fit_roofline(flops, nbytes, seconds, *, max_bytes_per_s: float | None = None) -> tuple[Roofline, "np.ndarray"]:
    """Least-squares fit of ``t = max(flops / F, bytes / B) + c`` to measured calls.

    Minimises the squared *log* error (every call counts alike, from 10 µs to 1 s) over
    log F, log B and log c with scipy's trust-region solver from a few starts; ``B`` is capped
    at ``max_bytes_per_s`` when given. Returns the roofline and the relative residuals
    (predicted / measured − 1) of every call.
    """
    import numpy as np
    from scipy.optimize import least_squares

    f = np.asarray(flops, dtype=float)
    b = np.asarray(nbytes, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if len(t) == 0 or not np.all(t > 0):
        raise ValueError("fit_roofline: needs positive measured times")
    lt = np.log(t)

    def pred(p):
        F, B, c = np.exp(p)
        return np.maximum(f / F, b / B) + c

    def resid(p):
        return np.log(pred(p)) - lt

    hi_b = math.log(max_bytes_per_s) if max_bytes_per_s else 60.0
    lo = np.array([0.0, 0.0, math.log(1e-9)])
    hi = np.array([70.0, hi_b, math.log(max(float(t.max()), 1e-6))])
    fpos = f > 0
    f0 = float(np.median(f[fpos] / t[fpos])) if fpos.any() else 1e9
    b0 = min(float(np.median(b / t)), math.exp(hi_b) * 0.5)
    best = None
    for sf, sb, sc in ((2, 2, 0.5), (1, 10, 0.2), (10, 1, 0.2), (4, 4, 0.9)):
        x0 = np.log([max(f0 * sf, 1.0), max(b0 * sb, 1.0), max(float(t.min()) * sc, 1e-9)])
        x0 = np.clip(x0, lo + 1e-6, hi - 1e-6)
        r = least_squares(resid, x0, bounds=(lo, hi), method="trf")
        if best is None or r.cost < best.cost:
            best = r
    F, B, c = (float(v) for v in np.exp(best.x))
    return Roofline(flops_per_s=F, bytes_per_s=B, overhead_s=c), pred(best.x) / t - 1.0
