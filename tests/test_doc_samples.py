"""scripts/doc_samples.py: the sample markers of the docs, the volatile rule, and replacing a
block (the commands of the real docs are not run here; one trivial shell command is)."""
from __future__ import annotations

import pytest

from _scripts import load_script

ds = load_script("scripts/doc_samples.py", "doc_samples")

DOC = """# Title

Text before.
<!-- sample: jqodi plan examples/paper-data1.yaml -->
```
$ jqodi plan examples/paper-data1.yaml
energy        4301.24 J (quantization included)
plan time     7.9 ms
```
<!-- /sample -->

Between.

<!-- sample: printf 'a\\nb\\n'     # two lines
setup: touch x
volatile: took (\\d+) s
columns: meas s | raw s
drop: ETA
drop: ^cloud: admitted
cut: ^stop
exit: 1
timeout: 30
-->

~~~text
$ old
~~~

<!-- /sample -->
After.
"""


def test_markers_parse_with_their_options(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text(DOC)
    a, b = ds.parse_samples(p)
    assert (a.line, a.command, a.ordinal) == (4, "jqodi plan examples/paper-data1.yaml", 0)
    lines = DOC.split("\n")
    assert lines[a.body_start] == "$ jqodi plan examples/paper-data1.yaml"
    assert lines[a.body_end] == "```"
    assert (a.setup, a.volatile, a.columns, a.drop, a.cut, a.exit, a.timeout_s) == (None, [], [], [], None, 0, None)
    assert b.command == "printf 'a\\nb\\n'     # two lines"
    assert b.setup == "touch x"
    assert b.volatile == [r"took (\d+) s"]
    assert b.columns == ["meas s", "raw s"]
    assert b.drop == ["ETA", "^cloud: admitted"]
    assert (b.cut, b.exit, b.timeout_s, b.ordinal) == ("^stop", 1, 30.0, 1)
    assert lines[b.body_start] == "$ old" and lines[b.body_end] == "~~~"


@pytest.mark.parametrize("text, says", [
    ("<!-- sample: x -->\nno fence\n", "not followed by a fenced block"),
    ("<!-- sample: x -->\n```\n$ x\n", "not closed"),
    ("<!-- sample: x -->\n```\n$ x\n```\ntext\n<!-- /sample -->\n", "not followed by <!-- /sample -->"),
    ("<!-- sample:  -->\n```\n```\n<!-- /sample -->\n", "names no command"),
    ("<!-- sample: x\nfoo: 1\n-->\n```\n```\n<!-- /sample -->\n", "sample option 'foo: 1'"),
    ("<!-- sample: x\nvolatile: (\n-->\n```\n```\n<!-- /sample -->\n", "bad regular expression"),
    ("<!-- sample: x\nexit: one\n-->\n```\n```\n<!-- /sample -->\n", "exit: 'one' is not a number"),
    ("<!-- sample: x\n```\n", "not closed by -->"),
    ("<!-- sample: x --> trailing\n```\n```\n<!-- /sample -->\n", "text after the sample marker"),
    ("text\n<!-- /sample -->\n", "without a <!-- sample"),
])
def test_a_malformed_marker_is_one_error_naming_its_line(tmp_path, text, says):
    p = tmp_path / "bad.md"
    p.write_text(text)
    with pytest.raises(ds.SampleError, match="bad.md:[0-9]+: .*" + says.replace("(", r"\(")):
        ds.parse_samples(p)


def test_markers_shown_as_examples_are_not_samples(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text("Mark a block with `<!-- sample: jqodi plan ... -->` and `<!-- /sample -->`:\n"
                 "````\n<!-- sample: jqodi plan x.yaml -->\n```\n$ jqodi plan x.yaml\n```\n<!-- /sample -->\n````\n"
                 "<!-- sample: echo real -->\n```\n```\n<!-- /sample -->\n")
    assert [s.command for s in ds.parse_samples(p)] == ["echo real"]
    p.write_text("```\nnever closed\n")
    with pytest.raises(ds.SampleError, match="doc.md:1: a fenced block is not closed"):
        ds.parse_samples(p)


def test_the_volatile_rule_masks_timings_not_results():
    old = "energy        4301.24 J\ntime          85.12 s of 180 s allowed\nplan time     7.9 ms"
    same = "energy        4301.24 J\ntime          85.12 s of 180 s allowed\nplan time     12.3 ms"
    other = "energy        4212.63 J\ntime          85.12 s of 180 s allowed\nplan time     7.9 ms"
    assert ds.normalize(old) == ds.normalize(same)
    assert ds.normalize(old) != ds.normalize(other)
    assert "…" in ds.normalize("epoch 1/3: train 2.30  3.97s wall") and "3.97" not in ds.normalize("x 3.97s wall")
    assert ds.normalize("at 2026-11-30T12:01:02Z, 12:01:02") == "at …, …"
    assert ds.normalize("took 12 s", volatile=[r"took (\d+) s"]) == "took … s"
    assert ds.normalize("predicted 4.85 s left, 41.2 J", volatile=[r"predicted ([\d.]+) s left, ([\d.]+) J"]) \
        == "predicted … s left, … J"
    with_progress = "epoch 1: train 2.3\n  epoch 2: 5/8 ETA 2s\nepoch 2: train 2.2"
    assert ds.normalize(with_progress, drop=["ETA"]) == ds.normalize("epoch 1: train 2.3\nepoch 2: train 2.2")


def test_columns_are_masked_by_their_header_span_left_or_right_aligned():
    table = ("solver   status    plan (ms)  schedule\n"
             "───────  ────────  ─────────  ────────\n"
             "jqodi    feasible  34.9       49×(a, cut 1)\n"
             "optimal  optimal   0.2        49×(a, cut 1)\n"
             "\n"
             "after    the table 123")
    out = ds.normalize(table).split("\n")
    assert out[1] == "─────── ──────── ───────── ────────"       # rules are kept
    assert out[2] == "jqodi feasible … 49×(a, cut 1)"
    assert out[3] == "optimal optimal … 49×(a, cut 1)"
    assert out[5] == "after the table 123"                       # the table ended at the blank line
    right = (" ep   pred s   meas s   err    pred J    meas J   err   train\n"
             "  1    0.354    0.364   +3%      4.18      4.39   +5%  2.3036\n"
             "  2    0.354    0.363  +13%      4.18     14.86  +16%  2.2410")
    masked = ds.normalize(right, columns=["meas s", "err", "meas J"]).split("\n")
    assert masked[1:] == [" 1 0.354 … … 4.18 … … 2.3036", " 2 0.354 … … 4.18 … … 2.2410"]
    # the same table measured again, its columns wider: equal once masked
    wider = right.replace("  0.364   +3%", " 10.364 +103%")
    assert ds.normalize(wider, columns=["meas s", "err", "meas J"]) == ds.normalize(right, columns=["meas s", "err", "meas J"])


def test_render_strips_and_cuts():
    assert ds.render("c", "\nx  \ny\n\n\n") == ["$ c", "x", "y"]
    assert ds.render("c", "a\nb\nper link\nc\n", cut="^per link") == ["$ c", "a", "b", "..."]


def test_replacing_a_block_keeps_everything_around_it(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text(DOC)
    a, b = ds.parse_samples(p)
    new = ds.replace_body(DOC, b, ["$ printf", "a", "b", "", "c"])
    assert new.replace("$ printf\na\nb\n\nc", "$ old") == DOC
    # the first sample's block is untouched, and both still parse where they were
    a2, b2 = ds.parse_samples(p, new)
    assert (a2.line, a2.body_start, a2.body_end) == (a.line, a.body_start, a.body_end)
    assert ds.current_body(new, b2) == "$ printf\na\nb\n\nc"
    longer = ds.replace_body(DOC, a, ["$ x"] + ["l"] * 10)
    assert ds.parse_samples(p, longer)[1].line == b.line + 8   # the later one moved with it


def test_is_changed_compares_outside_the_volatile_parts(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text(DOC)
    a = ds.parse_samples(p)[0]
    old = ds.current_body(DOC, a)
    timing_only = old.replace("7.9 ms", "8.4 ms").split("\n")
    assert not ds.is_changed(a, old, timing_only)
    assert ds.is_changed(a, old, old.replace("4301.24", "4212.63").split("\n"))
    said = ds.changed_lines(a, old, old.replace("4301.24", "4212.63").replace("7.9 ms", "9 ms").split("\n"))
    assert "-energy 4301.24 J" in said and "+energy 4212.63 J" in said and "plan time" not in said


def test_a_sample_runs_in_a_fresh_folder_and_home_and_rewrites_only_when_changed(tmp_path, monkeypatch):
    doc = tmp_path / "d.md"
    doc.write_text("<!-- sample: test -f x && echo \"$JQODI_HOME\" && pwd && ls examples >/dev/null && echo ok\n"
                   "setup: touch x\n-->\n```\n$ stale\n```\n<!-- /sample -->\n"
                   "<!-- sample: exit 3\nexit: 3\n-->\n```\n```\n<!-- /sample -->\n")
    assert ds.main([str(doc), "--check"]) == 1
    assert ds.main([str(doc)]) == 0
    text = doc.read_text()
    assert "$ test -f x && echo \"$JQODI_HOME\" && pwd && ls examples >/dev/null && echo ok\n" \
           "$JQODI_HOME\n$WORKDIR\nok\n```" in text
    assert "$ exit 3\n```" in text
    assert ds.main([str(doc), "--check"]) == 0
    doc.write_text(text.replace("exit: 3", "exit: 0"))
    assert ds.main([str(doc), "--check"]) == 2          # the command exits 3, not 0: an error


def test_every_marker_in_the_docs_parses():
    found = [s for f in ds.find_files([]) for s in ds.parse_samples(f)]
    assert found, "the docs hold no sample marker"
    assert all(s.command for s in found)
