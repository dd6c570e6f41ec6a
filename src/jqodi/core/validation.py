"""One validation style for every external input: pydantic, and one-line errors.

The scenario (YAML), the planning instance (JSON contract), the job (rendezvous / job files)
and the learning-estimate files are all validated by pydantic — as ``BaseModel`` documents
(the scenario) or as plain dataclasses through :func:`validate` (the contract types, which are
built positionally in code too). Whatever the input, a problem ends as one line
``<field.path>: <problem>`` (the first problem found), raised as the caller's error class.

The constrained number types below refuse YAML/JSON booleans (pydantic would read them as 1/0).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = ["VALID_BITS", "NoBool", "PosFloat", "NonNegFloat", "FiniteFloat", "PosInt", "Int", "Name",
           "Strict", "FieldProblem", "FORBID_EXTRA", "validate", "error_line", "one_line", "exactly_one"]

#: Bit-widths a candidate may use: 1..8 (fake-quantized) and 32 (full precision).
VALID_BITS = frozenset(range(1, 9)) | {32}


def _no_bool(v: Any) -> Any:
    """YAML's/JSON's true/false are not numbers here (pydantic would read them as 1/0)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {str(v).lower()}")
    return v


NoBool = BeforeValidator(_no_bool)
PosFloat = Annotated[float, NoBool, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, NoBool, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, NoBool, Field(allow_inf_nan=False)]
PosInt = Annotated[int, NoBool, Field(gt=0)]
Int = Annotated[int, NoBool]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _check_name(v: str) -> str:
    if not _NAME.fullmatch(v):
        raise ValueError(f"names use ASCII letters, digits, '_', '.' and '-', starting with a letter "
                         f"or digit (got {v!r})")
    return v


Name = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_check_name)]

#: ``__pydantic_config__`` of a plain dataclass validated by :func:`validate`: unknown keys fail.
FORBID_EXTRA = ConfigDict(extra="forbid")


class Strict(BaseModel):
    """Base of the validated documents: unknown fields are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class FieldProblem(ValueError):
    """Raised in validators to name a field path precisely (relative to the document's top)."""

    def __init__(self, path: str, problem: str):
        super().__init__(problem)
        self.path = path
        self.problem = problem


def exactly_one(spec: Any, a: str, b: str) -> None:
    """Two ways to give one quantity (e.g. ε as J/FLOP or as busy power): exactly one is set."""
    if (getattr(spec, a) is None) == (getattr(spec, b) is None):
        raise ValueError(f"give exactly one of '{a}' and '{b}'")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


_TAGS = ("literal[", "function-", "int", "float", "str", "bool", "constrained-", "tuple[", "list[",
         "dict[", "none", "nullable[", "json-or-python[", "union[")


def _format_loc(loc: tuple, top: str = "(top level)") -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic adds union-member/type tags ("int", "literal['same']", "function-after[...]")
            if out and (part.startswith(_TAGS) or part in ("int", "float")):
                continue
            out += f".{part}" if out else str(part)
    return out or top


def _problem(err: dict, top: str, unknown: str) -> tuple[str, str]:
    loc = tuple(err.get("loc", ()))
    msg = err.get("msg", "invalid")
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    exc = ctx.get("error")
    if isinstance(exc, FieldProblem):
        prefix = _format_loc(loc, "")
        return (f"{prefix}{exc.path}" if exc.path.startswith("[") or not prefix
                else f"{prefix}.{exc.path}"), exc.problem
    if etype == "missing" or etype == "missing_argument":
        return _format_loc(loc, top), "missing field"
    if etype in ("extra_forbidden", "unexpected_keyword_argument"):
        return _format_loc(loc, top), unknown
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if len(loc) >= 2 and loc[-1] == "[key]":  # a bad key of a mapping (e.g. bit_speedup)
        loc, msg = loc[:-2], f"key {loc[-2]!r}: {msg}"
    path = _format_loc(loc, top)
    # validators that name a sub-path put it first: "[3].name: unknown model ..."
    if msg.startswith("[") and "]" in msg and ": " in msg:
        sub, _, rest = msg.partition(": ")
        return (sub if path == top else path + sub), rest
    if etype == "too_short" and loc and not isinstance(loc[-1], int) and "input_shape" in str(loc[-1]):
        return path, msg
    inp = err.get("input")
    if "got " not in msg and not isinstance(inp, (dict, list)) and inp is not None:
        shown = repr(inp)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        msg = f"{msg} (got {shown})"
    return path, msg


def error_line(e: ValidationError, *, top: str = "(top level)", prefix: str = "",
               unknown: str = "unknown field") -> str:
    """The first problem of ``e`` as one line ``<prefix><path>: <problem> (+N more)``; when it is a
    missing field, every missing field is named (``a.x, a.y: missing fields``).

    Alternatives of a union that share the first problem's path are joined with "or".
    ``prefix`` is prepended to every path (e.g. ``"job."``); ``top`` names the document itself.
    """
    errors = e.errors()
    path, problem = _problem(errors[0], top, unknown)
    same = [_problem(x, top, unknown) for x in errors[1:]]
    alts = [p for q, p in same if q == path and p != problem]
    if alts:
        problem = " or ".join(dict.fromkeys([problem, *alts]))
    rest = len(errors) - 1 - len(alts)
    if problem == "missing field":  # name every missing field, not the first one and "+N more"
        missing = [q for q, p in same if p == "missing field" and q != path]
        if missing:
            problem, rest = "missing fields", rest - len(missing)
    else:
        missing = []
    more = f" (+{rest} more)" if rest > 0 else ""
    paths = [_prefixed(q, prefix, top) for q in dict.fromkeys([path, *missing])]
    return one_line(f"{', '.join(paths)}: {problem}{more}")


def _prefixed(path: str, prefix: str, top: str) -> str:
    if not prefix:
        return path
    return prefix.rstrip(".") if path == top else (prefix + path if path.startswith("[") or
                                                   prefix.endswith(".") else f"{prefix}.{path}")


T = TypeVar("T")
_ADAPTERS: dict[Any, TypeAdapter] = {}


def validate(cls: type[T], data: Any, error: type[Exception], *, prefix: str = "", top: str = "(top level)",
             unknown: str = "unknown field") -> T:
    """Validate ``data`` as ``cls`` (a pydantic model or a dataclass); raise ``error(one line)``."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        raise error(error_line(e, top=top, prefix=prefix, unknown=unknown)) from None
    except FieldProblem as e:  # pragma: no cover - pydantic wraps these
        raise error(one_line(f"{prefix}{e.path}: {e.problem}")) from None
