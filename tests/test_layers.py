"""The layers point one way: ``cli → app → render → {planner, learning, runtime} → core``.

Every module's imports are parsed (``ast``, imports inside functions included) and each import of
another ``jqodi`` module must point to the same layer family or below. ``planner``, ``learning``
and ``runtime`` are siblings: none imports another (the runtime learns of plans through a
controller the app injects). ``render`` (tables, plots, text) is used only by ``app`` and ``cli``.
The planner never imports torch.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: layer of each top-level part of the package (higher may import lower, never the reverse)
RANK = {"core": 0, "errors": 0, "__init__": 0, "planner": 1, "learning": 1, "runtime": 1,
        "render": 2, "app": 3, "cli": 4}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / "jqodi").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # ``from jqodi import core`` style: the names are modules too
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names if name == "jqodi"]
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    part = parts[1] if len(parts) > 1 else "__init__"
    return "cli" if part == "__main__" else part


def _violations() -> list[str]:
    bad = []
    for module, path in _modules().items():
        src = _part(module)
        if src not in RANK:
            bad.append(f"{module}: not in a known layer ({src})")
            continue
        for line, target in _imports(path, module):
            if target.split(".")[0] == "torch" and src == "planner":
                bad.append(f"{module}:{line} imports torch (the planner never does)")
            if not target.startswith("jqodi.") or target.split(".")[1] not in RANK:
                continue
            dst = target.split(".")[1]
            if dst == src:
                continue
            if RANK[dst] > RANK[src]:
                bad.append(f"{module}:{line} imports {target}: {src} → {dst} points up")
            elif RANK[dst] == RANK[src] and RANK[src] > 0:
                bad.append(f"{module}:{line} imports {target}: {src} → {dst} points sideways")
    return bad


def test_every_module_sits_in_a_layer_and_imports_point_down():
    assert _violations() == []


@pytest.mark.parametrize("source, expected", [
    ("from jqodi.app.main_job import main_job\n", "points up"),
    ("import torch\n", "imports torch"),
    ("def f():\n    from jqodi.runtime import launch\n", "points sideways"),
])
def test_the_layer_check_catches_what_it_should(tmp_path, monkeypatch, source, expected):
    """The checker itself: a planner module that imports upward, torch or sideways is caught."""
    fake = tmp_path / "jqodi" / "planner"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    assert any(expected in v for v in _violations())
