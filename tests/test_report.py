"""report.py: tables, atomic JSON, plots (Agg, no display)."""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass

import pytest

from jqodi.render.report import Series, format_table, format_value, line_plot, save_json, stacked_bars


def test_format_table_aligns_numbers_right_and_text_left():
    rows = [{"strategy": "JQODI", "energy_j": 7651.3, "epochs": 36, "reached": True},
            {"strategy": "Minimal Model", "energy_j": math.inf, "epochs": None, "reached": False}]
    text = format_table(rows, ["strategy", ("energy_j", "energy (J)"), "epochs", "reached"],
                        title="Data 1")
    assert text.splitlines() == [
        "Data 1",
        "strategy       energy (J)  epochs  reached",
        "─────────────  ──────────  ──────  ───────",
        "JQODI              7651.3      36  yes",
        "Minimal Model           ∞       -  no",
    ]


def test_format_table_custom_format_and_missing_key():
    text = format_table([{"a": 1.23456}, {}], [("a", "A", ".2f"), "b"])
    assert text.splitlines()[2:] == ["1.23  -", "   -  -"]


def test_format_value():
    assert format_value(0.0123456) == "0.01235"
    assert format_value(12345.678) == "12345.7"
    assert format_value(-math.inf) == "-∞"
    assert format_value(float("nan")) == "nan"


@dataclass
class Point:
    x: float
    tag: str


class HasToDict:
    def to_dict(self):
        return {"k": (1, 2)}


def test_save_json_converts_and_is_atomic(tmp_path):
    np = pytest.importorskip("numpy")
    p = save_json(tmp_path / "sub" / "r.json",
                  {"p": Point(math.inf, "a"), "o": HasToDict(), "arr": np.arange(3),
                   "s": np.float64(2.5), "path": tmp_path / "x"})
    data = json.loads(p.read_text())
    assert data == {"p": {"x": None, "tag": "a"}, "o": {"k": [1, 2]}, "arr": [0, 1, 2],
                    "s": 2.5, "path": str(tmp_path / "x")}
    # a failed write leaves the old file and no temp files behind
    with pytest.raises(TypeError):
        save_json(p, {"bad": object()})
    assert json.loads(p.read_text())["s"] == 2.5
    assert os.listdir(p.parent) == ["r.json"]


def test_plots_write_pngs_without_pyplot(tmp_path):
    pytest.importorskip("matplotlib")
    already = "matplotlib.pyplot" in sys.modules
    a = line_plot(tmp_path / "l.png",
                  [Series("A", [0, 1, 2], [3, 2, 1], end_marker="o"),
                   Series("B", [0, 1], [3, 2.5], end_marker="s", linestyle="--")],
                  xlabel="energy (J)", ylabel="loss", hlines={"L_max": 1.5}, vlines={"T": 1.5})
    b = stacked_bars(tmp_path / "b.png", ["JQODI", "Optimum"],
                     {"SD": [1.0, 2.0], "ES": [3.0, 1.0]}, ylabel="J")
    for p in (a, b):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    assert ("matplotlib.pyplot" in sys.modules) == already
