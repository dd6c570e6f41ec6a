"""The LSQ quantizer of a QAT layer as two compiled loops (one pass forward, one pass backward).

PyTorch runs the fake quantizer as separate elementwise kernels: six full passes over every
activation tensor forward (divide, clamp, STE mask, round, step-gradient factor, scale) and two
backward (``grad · mask``, the step's dot product), plus two saved full-size tensors per layer.
At the CPU-scale widths of this project a pass over an activation costs about as much as a slice
of the convolution next to it, so the passes themselves, not the arithmetic, were most of what
QAT added to a ResNet20 step (docs/learning.md "QAT overhead"). Here:

* :func:`quantize` — ``out = q(clamp(x/s, Qn, Qp)) · s`` in one pass (reads ``x``, writes ``out``;
  ``s = max(|s_raw|, ε)`` computed in the loop): bit for bit what
  :func:`jqodi.core.quant.lsq.lsq_forward` gives (the same IEEE division, clamp, round-half-to-even
  and product; checked when the library loads, see below);
* :func:`backward` — from ``x`` again (the layer saves its input, which the ReLU before it keeps
  alive anyway, instead of a mask and a factor): ``∂L/∂x = g · m`` (bit for bit) and per row
  ``Σ g · ds`` with ``ds = q(v_c) − m · v_c``, in 16 float32 lanes per block of 1,024 elements,
  the blocks summed in float64 (deterministic; it differs from ``torch.dot``'s sum only by
  rounding, ≈ 1e-7 relative);
* :func:`step_factor` — ``ds`` itself (the first layer's adjoint step gradient needs it).

The C source below is compiled with the system's C compiler on first use (0.4–1 s, no network,
no torch headers; ``-O3 -march=native``, no fast-math, no FMA contraction) into
``$JQODI_KERNEL_DIR`` or the user cache dir (``<cache>/jqodi/kernels``, missing levels created
mode 0700), keyed by a hash of the source, the flags, the compiler and this CPU, and loaded with
``ctypes`` (single-threaded loops). Nobody else may be able to put a library there
(:func:`_secure_dir`): the directory must be this user's and writable by nobody else, and every
directory above it this user's or root's and not writable by others (unless sticky, like /tmp),
else the kernel is neither built nor loaded and :func:`status` names the directory. The library
is opened once, without following a link, checked on that open file (a regular file of this
user's that nobody else may write) and loaded from it (``/proc/self/fd``, where there is one), so
what was checked is what is loaded. Before it is used, it must reproduce the PyTorch quantizer
exactly on a probe tensor (ties at .5, the clamp bounds, 1 bit, per channel, a negative step).
Without a compiler,
if the build or the check fails, or with ``JQODI_QUANT_KERNEL=0``, :func:`available` is False and
the QAT layers use the PyTorch path (same values; :func:`status` says why).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import torch

from jqodi.core.quant.lsq import MIN_STEP

__all__ = ["available", "backward", "kernel_dir", "quantize", "status", "step_factor", "usable"]

SOURCE = r"""
#include <math.h>
#include <stdint.h>

static inline float eff_step(float raw, float min_step) {   /* max(|s|, eps), NaN stays NaN */
    float s = fabsf(raw);
    return s < min_step ? min_step : s;
}

/* The quantizer of one element x at step s: v = x/s clamped to [qn, qp] (vc), its level q(vc)
   (sign: +-1, else round half to even), the STE mask m (1 where the clamp left v as it was) and
   the step factor ds = q(vc) - m * vc. Every loop below quantizes through it; sign is a
   compile-time constant at each call (specialised loops). */
typedef struct { float q, m, ds; } lsq_elem;
static inline __attribute__((always_inline)) lsq_elem lsq_quantize1(float x, float s, float qn, float qp,
                                                                     const int sign) {
    lsq_elem e;
    const float v = x / s;
    const float vc = v < qn ? qn : (v > qp ? qp : v);
    e.m = vc == v ? 1.0f : 0.0f;
    e.q = sign ? (vc >= 0.0f ? 1.0f : -1.0f) : nearbyintf(vc);
    e.ds = e.q + (-1.0f * vc) * e.m;
    return e;
}

/* out = q(clamp(x/s, qn, qp)) * s; row c (inner elements) uses raw_step[c]. */
void jq_lsq_quantize(const float *restrict x, const float *restrict raw_step, int64_t outer, int64_t inner,
                     float qn, float qp, int sign, float min_step, float *restrict out) {
    for (int64_t c = 0; c < outer; ++c) {
        const float s = eff_step(raw_step[c], min_step);
        const float *xc = x + c * inner;
        float *oc = out + c * inner;
        if (sign) {
            for (int64_t i = 0; i < inner; ++i) oc[i] = lsq_quantize1(xc[i], s, qn, qp, 1).q * s;
        } else {
            for (int64_t i = 0; i < inner; ++i) oc[i] = lsq_quantize1(xc[i], s, qn, qp, 0).q * s;
        }
    }
}

#define LANES 16
#define BLOCK 1024
/* Element k of a backward row: ds_out[k] = ds (if has_ds), gx[k] = g[k] * m (if has_gx); returns g[k] * ds
   (0 * ds without g: unused). */
static inline __attribute__((always_inline)) float lsq_bwd_elem(
        const float *restrict x, const float *restrict g, float *restrict gx, float *restrict dso, int64_t k,
        float s, float qn, float qp, const int sign, const int has_g, const int has_gx, const int has_ds) {
    const lsq_elem e = lsq_quantize1(x[k], s, qn, qp, sign);
    const float gv = has_g ? g[k] : 0.0f;
    if (has_ds) dso[k] = e.ds;
    if (has_gx) gx[k] = gv * e.m;
    return gv * e.ds;
}

/* One row of the backward; the flags are compile-time constants at every call (specialised loops). */
static inline __attribute__((always_inline)) double lsq_bwd_row(
        const float *restrict x, const float *restrict g, float *restrict gx, float *restrict dso, int64_t n,
        float s, float qn, float qp, const int sign, const int has_g, const int has_gx, const int has_ds) {
    double lane[LANES] = {0};
    int64_t i = 0;
    while (i + LANES <= n) {          /* float lanes over blocks of <= BLOCK elements, then into float64 */
        float part[LANES] = {0};
        const int64_t stop = i + BLOCK <= n ? i + BLOCK : n - (n - i) % LANES;
        for (; i < stop; i += LANES) {
            for (int j = 0; j < LANES; ++j) {
                const float p = lsq_bwd_elem(x, g, gx, dso, i + j, s, qn, qp, sign, has_g, has_gx, has_ds);
                if (has_g) part[j] += p;
            }
        }
        for (int j = 0; j < LANES; ++j) lane[j] += (double)part[j];
    }
    for (; i < n; ++i) {
        const float p = lsq_bwd_elem(x, g, gx, dso, i, s, qn, qp, sign, has_g, has_gx, has_ds);
        if (has_g) lane[i % LANES] += (double)p;
    }
    double acc = 0.0;
    for (int j = 0; j < LANES; ++j) acc += lane[j];
    return acc;
}

/* From x again: gx = g * m (if gx), ds_out = q(vc) - m * vc (if ds_out), and if g:
   gs[c] = ((float) sum_i g*ds) * gscale * sign(raw_step[c]) (+1 at 0). */
void jq_lsq_backward(const float *restrict x, const float *restrict raw_step, const float *restrict g,
                     int64_t outer, int64_t inner, float qn, float qp, int sign, float min_step, float gscale,
                     float *restrict gx, float *restrict gs, float *restrict ds_out) {
    for (int64_t c = 0; c < outer; ++c) {
        const float s = eff_step(raw_step[c], min_step);
        const float *xc = x + c * inner;
        const int64_t o = c * inner;
        double acc = 0.0;
        if (!g) {
            if (sign) lsq_bwd_row(xc, 0, 0, ds_out + o, inner, s, qn, qp, 1, 0, 0, 1);
            else lsq_bwd_row(xc, 0, 0, ds_out + o, inner, s, qn, qp, 0, 0, 0, 1);
            continue;
        }
        if (gx) {
            if (sign) acc = lsq_bwd_row(xc, g + o, gx + o, 0, inner, s, qn, qp, 1, 1, 1, 0);
            else acc = lsq_bwd_row(xc, g + o, gx + o, 0, inner, s, qn, qp, 0, 1, 1, 0);
        } else {
            if (sign) acc = lsq_bwd_row(xc, g + o, 0, 0, inner, s, qn, qp, 1, 1, 0, 0);
            else acc = lsq_bwd_row(xc, g + o, 0, 0, inner, s, qn, qp, 0, 1, 0, 0);
        }
        float r = (float)acc * gscale;
        gs[c] = raw_step[c] >= 0.0f ? r : -r;
    }
}
"""

FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
FALLBACK_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]

_lib = None
_status = "not loaded yet"
_P = ctypes.c_void_p
_I = ctypes.c_int64
_F = ctypes.c_float


def kernel_dir() -> Path:
    """``$JQODI_KERNEL_DIR`` if set, else ``<user cache dir>/jqodi/kernels`` (a cache: safe to delete)."""
    env = os.environ.get("JQODI_KERNEL_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("jqodi", appauthor=False)) / "kernels"


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))][:2]
    except OSError:
        keep = []
    return "|".join([platform.machine(), platform.system(), *keep])


def _secure_dir(directory: Path) -> Path:
    """``directory`` resolved (links followed once, the answer used from then on) and its missing
    levels created mode 0700, once nobody but this user (and root) can put a file in it: it must be
    owned by this user and not writable by group or others; every directory above it owned by this
    user or root and not writable by group or others unless sticky (/tmp). The directories that
    exist are checked before anything is created. A :class:`RuntimeError` naming the directory
    otherwise."""
    directory = Path(os.path.realpath(directory))
    missing = []
    d = directory
    while not os.path.lexists(d):
        missing.append(d)
        d = d.parent
    _check_dirs(d, leaf=not missing)
    for m in reversed(missing):
        try:
            os.mkdir(m, 0o700)
        except FileExistsError:
            pass
    if missing:
        _check_dirs(directory, leaf=True)
    return directory


def _check_dirs(directory: Path, *, leaf: bool) -> None:
    """:func:`_secure_dir`'s rule for ``directory`` (the kernel's own when ``leaf``) and those above it."""
    if not hasattr(os, "getuid"):
        return
    uid = os.getuid()
    for d in (directory, *directory.parents):
        st = os.lstat(d)
        own = leaf and d == directory
        if not stat.S_ISDIR(st.st_mode):
            raise RuntimeError(f"kernel directory {d} is not a directory: not used")
        if st.st_uid != uid and (own or st.st_uid != 0):
            raise RuntimeError(f"kernel directory {d} is owned by uid {st.st_uid}, not this user ({uid}): "
                               f"not used (set JQODI_KERNEL_DIR to a directory of yours)")
        if st.st_mode & 0o022 and (own or not st.st_mode & stat.S_ISVTX):
            raise RuntimeError(f"kernel directory {d} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                               f"not used (chmod go-w it, or set JQODI_KERNEL_DIR)")


def _open_trusted(path: Path) -> int:
    """A read-only fd on ``path``, opened without following a link, if the file is a regular file of
    this user's that nobody else may write (the library this process loads)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise RuntimeError(f"{path} cannot be opened ({e.strerror}; a link is not followed): not loaded") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022)):
        os.close(fd)
        raise RuntimeError(f"{path} is not owned by this user or is writable by others: not loaded")
    return fd


def _load_fd(fd: int, path: Path) -> ctypes.CDLL:
    """Load the library open on ``fd`` (``path`` only names it, and is opened again where there is
    no ``/proc/self/fd``). The fd stays open while the library is loaded (ctypes never unloads one),
    so its ``/proc/self/fd`` name, which the dynamic loader remembers, is never reused by another."""
    name = f"/proc/self/fd/{fd}"
    try:
        return ctypes.CDLL(name if os.path.exists(name) else str(path))
    except OSError:
        os.close(fd)
        raise


def _library_name(flags: list[str], cc: str) -> str:
    """The compiled library's file name: keyed by a hash of :data:`SOURCE`, the flags, the compiler
    and this CPU, so a library built from another source (or for another CPU) is never reused."""
    key = hashlib.sha256("\n".join([SOURCE, " ".join(flags), cc, _cpu_signature()]).encode()).hexdigest()[:16]
    return f"jqodi_lsq_{key}.so"


def _build(directory: Path) -> Path:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    last_error = ""
    for flags in (FLAGS, FALLBACK_FLAGS):
        target = directory / _library_name(flags, cc)
        if os.path.lexists(target):
            return target
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            src = Path(tmp) / "lsq.c"
            src.write_text(SOURCE)
            out = Path(tmp) / target.name
            proc = subprocess.run([cc, *flags, "-o", str(out), str(src), "-lm"], capture_output=True, text=True,
                                  timeout=300)
            if proc.returncode == 0:
                out.chmod(0o755)
                os.replace(out, target)   # atomic: a concurrent build of the same key writes the same file
                return target
            last_error = (proc.stderr.strip().splitlines() or ["?"])[-1]
    raise RuntimeError(f"the C compiler failed: {last_error}")


def _self_check() -> None:
    """The kernel must reproduce the PyTorch quantizer exactly (values, mask, step factor)."""
    from jqodi.core.quant.lsq import lsq_forward

    gen = torch.Generator().manual_seed(0)
    for qn, qp, sign, per_channel in ((0.0, 255.0, False, False), (-8.0, 7.0, False, True),
                                      (-1.0, 1.0, True, True), (-2.0, 1.0, False, False)):
        x = torch.randn(6, 5, 7, generator=gen) * 4
        step = torch.rand(6 if per_channel else 1, generator=gen) * 0.5 + 0.05
        step[0] = -step[0]
        x.view(-1)[:40] = (torch.arange(40) - 20) * 0.5 * step[0].abs()   # ties at .5 and the clamp bounds
        eff = step.abs().clamp_min(MIN_STEP)
        ref_out, ref_mask, ref_ds = lsq_forward(x, eff.view(-1, 1, 1) if per_channel else eff, qn, qp, sign)
        g = torch.randn(x.shape, generator=gen)
        out = quantize(x, step, qn, qp, sign)
        gx, gs = backward(x, step, g, qn, qp, sign, 1.0, need_x=True)
        ds = step_factor(x, step, qn, qp, sign)
        sums = (g * ref_ds).reshape(step.numel(), -1).double().sum(1).float() * torch.where(step >= 0, 1.0, -1.0)
        if not (torch.equal(out, ref_out) and torch.equal(ds, ref_ds) and torch.equal(gx, g * ref_mask)
                and torch.allclose(gs, sums, rtol=1e-5, atol=1e-6)):
            raise RuntimeError("the compiled quantizer does not reproduce the PyTorch one")


def _load() -> None:
    global _lib, _status
    if os.environ.get("JQODI_QUANT_KERNEL", "1").strip().lower() in ("0", "no", "off", "false"):
        _status = "off (JQODI_QUANT_KERNEL=0)"
        return
    try:
        path = _build(_secure_dir(kernel_dir()))
        lib = _load_fd(_open_trusted(path), path)
        lib.jq_lsq_quantize.argtypes = [_P, _P, _I, _I, _F, _F, ctypes.c_int, _F, _P]
        lib.jq_lsq_backward.argtypes = [_P, _P, _P, _I, _I, _F, _F, ctypes.c_int, _F, _F, _P, _P, _P]
        lib.jq_lsq_quantize.restype = lib.jq_lsq_backward.restype = None
        _lib = lib
        _self_check()
        _status = f"compiled ({path})"
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
        _lib = None
        _status = f"PyTorch fallback: {e}"


def available() -> bool:
    """True when the compiled quantizer is built, loaded and checked (loads it on first call)."""
    if _status == "not loaded yet":
        _load()
    return _lib is not None


def status() -> str:
    """How the QAT layers quantize: ``compiled (<path>)`` or why the PyTorch path is used."""
    available()
    return _status


def usable(x: torch.Tensor, step: torch.Tensor) -> bool:
    """``x`` and its step can go to the kernel: float32, CPU, contiguous, one step or one per row."""
    return ((_lib is not None or available()) and x.dtype is torch.float32 and step.dtype is torch.float32
            and x.is_cpu and step.is_cpu and x.is_contiguous() and step.is_contiguous()
            and (step.numel() == 1 or (x.dim() > 0 and step.numel() == x.shape[0])))


def quantize(x: torch.Tensor, step: torch.Tensor, qn: float, qp: float, sign: bool) -> torch.Tensor:
    """``q(clamp(x/s, Qn, Qp)) · s`` with ``s = max(|step|, ε)`` (one step, or one per row of ``x``)."""
    out = torch.empty_like(x)
    outer = step.numel()
    _lib.jq_lsq_quantize(x.data_ptr(), step.data_ptr(), outer, x.numel() // outer, qn, qp, int(sign), MIN_STEP,
                         out.data_ptr())
    return out


def backward(x: torch.Tensor, step: torch.Tensor, grad: torch.Tensor, qn: float, qp: float, sign: bool,
             grad_scale: float, need_x: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(∂L/∂x, ∂L/∂s_raw)`` of :func:`quantize` given ``grad`` = ∂L/∂out: the STE ``grad · m`` and
    LSQ's ``g · sign(s) · Σ grad · ds`` per step (shaped like ``step``)."""
    grad = grad.contiguous()
    gx = torch.empty_like(x) if need_x else None
    outer = step.numel()
    gs = torch.empty_like(step)
    _lib.jq_lsq_backward(x.data_ptr(), step.data_ptr(), grad.data_ptr(), outer, x.numel() // outer, qn, qp,
                         int(sign), MIN_STEP, grad_scale, gx.data_ptr() if need_x else None, gs.data_ptr(), None)
    return gx, gs


def step_factor(x: torch.Tensor, step: torch.Tensor, qn: float, qp: float, sign: bool) -> torch.Tensor:
    """``ds = q(v_c) − m · v_c`` (``∂out/∂s`` of :func:`quantize`, before the sign of the raw step)."""
    ds = torch.empty_like(x)
    outer = step.numel()
    _lib.jq_lsq_backward(x.data_ptr(), step.data_ptr(), None, outer, x.numel() // outer, qn, qp, int(sign),
                         MIN_STEP, 1.0, None, None, ds.data_ptr())
    return ds
