"""Re-run the command samples of the docs and put their real output in place.

A sample is a fenced block in ``README.md`` or ``docs/*.md`` between two HTML comments, the
first naming the exact command::

    <!-- sample: jqodi plan examples/paper-data1.yaml -->
    ```
    $ jqodi plan examples/paper-data1.yaml
    solver        jqodi (feasible, planned for the robust epoch estimate)
    ...
    ```
    <!-- /sample -->

The comment may go on over more lines with options, one ``key: value`` a line::

    <!-- sample: jqodi plan my-scenario.yaml     # examples/paper-data1.yaml + a serving block
    setup: cp examples/paper-data1.yaml my-scenario.yaml && printf 'serving: ...' >> my-scenario.yaml
    volatile: t = ([\\d.]+) s
    drop: ETA
    columns: meas s | raw s
    cut: ^per link
    exit: 1
    timeout: 900
    -->

* ``setup`` runs first, in the same folder, and is not shown (it makes input files the doc
  describes in words);
* ``volatile`` (repeatable) is a regular expression whose match — its groups, if it has any —
  is a measured, load-dependent figure; ``columns`` names fixed-width table columns (by their
  header, ``|`` between names) whose values are such figures; ``drop`` (repeatable) matches
  whole lines that may or may not appear (a progress line) (see *The volatile rule*);
* ``cut``: the output is shown up to the first line matching the expression, then ``...``;
* ``exit``: the command's expected exit status (default 0; another status is an error);
* ``timeout``: seconds before the command is stopped (default ``--timeout``, 600).

How a sample runs: ``sh -c COMMAND`` with its output and error streams together (as a terminal
shows them), in a fresh folder that holds links to the repository's top-level entries (so
``examples/…`` and ``src/…`` resolve and files the command writes stay out of the repository),
``JQODI_HOME`` a fresh empty folder, ``jqodi`` and ``python`` the interpreter running this
script with this repository's ``src`` first on ``PYTHONPATH``, ``TZ=UTC`` and
``PYTHONHASHSEED=0``. The block becomes ``$ COMMAND`` and the output, trailing spaces and blank
lines stripped; the fresh folders' paths are written as ``$WORKDIR`` and ``$JQODI_HOME``.

The volatile rule: a block is *changed* when its text differs from the new output once the
volatile parts of both are replaced by ``…`` and runs of spaces by one (alignment). Volatile by
default: the solvers' ``plan time … ms`` line and ``plan (ms)`` column, ``N s wall``/``Ns wall``
durations, ``elapsed``/``ETA`` figures, ``load average`` figures and dates/times of day; a
sample's own ``volatile``, ``columns`` and ``drop`` add to them. A changed block is rewritten
with the new output; an unchanged one is left as it is, real figures included, so a re-run
touches nothing when only timings moved.

    python scripts/doc_samples.py              # re-run every sample, rewrite the changed ones
    python scripts/doc_samples.py --check      # list the changed ones and how; write nothing
    python scripts/doc_samples.py --list       # list the samples and their commands
    python scripts/doc_samples.py --only planner.md --only 'paper-data2'   # file or command substring

``make docs-samples`` runs the first (``make docs-samples ARGS=--check`` the second). Exit
codes: 0 done, 1 ``--check`` found changed samples, 2 a malformed marker or a failing command
(one line naming the file and line). The docs' side of it: docs/interfaces.md, "Command samples
in the docs".
"""

import argparse
import difflib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Where samples are looked for, relative to the repository root.
DEFAULT_FILES = ("README.md", "docs/*.md")

#: The volatile rule's defaults (see the module docstring): expressions whose match, or its groups,
#: is a measured figure, and fixed-width columns whose values are.
DEFAULT_VOLATILE = (
    r"plan time\s+(\S+ ms)",
    r"(\d+(?:\.\d+)?) ?s wall",
    r"elapsed ([\d.:]+ ?[a-z]*)",
    r"ETA ([\d.:]+ ?[a-z]*)",
    r"load average ([\d.]+)",
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?",
    r"\b\d{2}:\d{2}:\d{2}\b",
)
DEFAULT_COLUMNS = ("plan (ms)",)

#: What a volatile part reads as when blocks are compared.
MASK = "…"

OPEN = re.compile(r"^\s*<!--\s*sample:")
CLOSE = re.compile(r"^\s*<!--\s*/sample\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)(.*)$")
OPTION_KEYS = ("setup", "volatile", "drop", "columns", "cut", "exit", "timeout")


class SampleError(Exception):
    """A malformed marker or a failing command: one line naming the file and line."""


@dataclass
class Sample:
    """One marked block of a doc: where it is, what to run, and what the doc holds now."""

    path: Path
    line: int                   #: 1-based line of the ``<!-- sample:`` comment
    ordinal: int                #: 0-based position among the file's samples
    command: str
    body_start: int             #: 0-based index of the first line inside the fence
    body_end: int               #: 0-based index of the closing fence line
    indent: str = ""
    setup: str | None = None
    volatile: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    cut: str | None = None
    exit: int = 0
    timeout_s: float | None = None

    @property
    def where(self) -> str:
        try:
            rel = self.path.resolve().relative_to(ROOT)
        except ValueError:
            rel = self.path
        return f"{rel}:{self.line}"


# ── parsing ──────────────────────────────────────────────────────────────────────────────────

def _parse_comment(text: str, path: Path, line: int) -> tuple[str, dict[str, list[str]]]:
    """The command and the options of a marker comment's text (between ``sample:`` and ``-->``)."""
    lines = [ln.strip() for ln in text.split("\n")]
    command = lines[0]
    if not command:
        raise SampleError(f"{path}:{line}: sample marker names no command")
    options: dict[str, list[str]] = {}
    for ln in lines[1:]:
        if not ln:
            continue
        key, sep, value = ln.partition(":")
        key = key.strip()
        if not sep or key not in OPTION_KEYS:
            raise SampleError(f"{path}:{line}: sample option {ln!r}: expected one of "
                              f"{', '.join(k + ':' for k in OPTION_KEYS)}")
        options.setdefault(key, []).append(value.strip())
    return command, options


def _apply_options(sample: Sample, options: dict[str, list[str]]) -> None:
    where = sample.where
    for key, values in options.items():
        if key not in ("volatile", "drop") and len(values) > 1:
            raise SampleError(f"{where}: sample option {key}: given {len(values)} times")
    if "setup" in options:
        sample.setup = options["setup"][0]
    for rx in options.get("volatile", []) + options.get("drop", []) + options.get("cut", []):
        try:
            re.compile(rx)
        except re.error as e:
            raise SampleError(f"{where}: sample option: bad regular expression {rx!r}: {e}") from None
    sample.volatile = list(options.get("volatile", []))
    sample.drop = list(options.get("drop", []))
    if "columns" in options:
        sample.columns = [c.strip() for c in options["columns"][0].split("|") if c.strip()]
    if "cut" in options:
        sample.cut = options["cut"][0]
    for key in ("exit", "timeout"):
        if key in options:
            try:
                value = float(options[key][0])
            except ValueError:
                raise SampleError(f"{where}: sample option {key}: {options[key][0]!r} is not a number") from None
            if key == "exit":
                sample.exit = int(value)
            elif value <= 0:
                raise SampleError(f"{where}: sample option timeout: must be > 0 seconds")
            else:
                sample.timeout_s = value


def _fence_end(lines: list[str], start: int, fence: str) -> int:
    """Index of the line closing a fence opened with ``fence`` (``len(lines)`` if none)."""
    closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
    j = start
    while j < len(lines) and not closing.match(lines[j]):
        j += 1
    return j


def parse_samples(path: Path, text: str | None = None) -> list[Sample]:
    """Every marked sample of one Markdown file, in order.

    A marker is a line starting ``<!-- sample: COMMAND [options] -->``, then (blank lines
    allowed) one fenced block, then ``<!-- /sample -->``; markers inside other fenced blocks are
    examples, not samples. Anything else raises :class:`SampleError` naming the line.
    """
    if text is None:
        text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    out: list[Sample] = []
    i = 0
    while i < len(lines):
        m = OPEN.match(lines[i])
        if not m:
            f = FENCE.match(lines[i])
            if f:   # a fenced block outside a sample: markers shown inside it are examples
                end = _fence_end(lines, i + 1, f.group(2))
                if end >= len(lines):
                    raise SampleError(f"{path}:{i + 1}: a fenced block is not closed")
                i = end + 1
                continue
            if CLOSE.match(lines[i]):
                raise SampleError(f"{path}:{i + 1}: <!-- /sample --> without a <!-- sample: ... --> before it")
            i += 1
            continue
        start = i
        rest = lines[i][m.end():]
        chunk = []
        while "-->" not in rest:
            chunk.append(rest)
            i += 1
            if i >= len(lines):
                raise SampleError(f"{path}:{start + 1}: sample marker is not closed by -->")
            rest = lines[i]
        before, _, after = rest.partition("-->")
        chunk.append(before)
        if after.strip():
            raise SampleError(f"{path}:{i + 1}: text after the sample marker's -->; put the block on the next lines")
        command, options = _parse_comment("\n".join(chunk), path, start + 1)
        i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        f = FENCE.match(lines[i]) if i < len(lines) else None
        if not f:
            raise SampleError(f"{path}:{start + 1}: sample marker is not followed by a fenced block (```)")
        indent, fence = f.group(1), f.group(2)
        body_start = i + 1
        j = _fence_end(lines, body_start, fence)
        if j >= len(lines):
            raise SampleError(f"{path}:{i + 1}: the sample's fenced block is not closed")
        k = j + 1
        while k < len(lines) and not lines[k].strip():
            k += 1
        if k >= len(lines) or not CLOSE.match(lines[k]):
            raise SampleError(f"{path}:{start + 1}: the sample's fenced block is not followed by <!-- /sample -->")
        sample = Sample(path=path, line=start + 1, ordinal=len(out), command=command,
                        body_start=body_start, body_end=j, indent=indent)
        _apply_options(sample, options)
        out.append(sample)
        i = k + 1
    return out


# ── the volatile rule ────────────────────────────────────────────────────────────────────────

def _mask_columns(lines: list[str], headers: list[str]) -> list[str]:
    """Mask the values of fixed-width columns: on the lines below a header line (one where a
    header stands between spaces or the line's ends) up to the next blank line, each non-blank
    run of characters that overlaps the header's span (left- or right-aligned values)."""
    rxs = [re.compile(rf"(?<!\S){re.escape(h)}(?!\S)") for h in headers]
    spans_of: dict[int, list[tuple[int, int]]] = {}
    i = 0
    while i < len(lines):
        spans = [m.span() for rx in rxs for m in rx.finditer(lines[i])]
        if not spans:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip():
            spans_of.setdefault(j, []).extend(spans)
            j += 1
        i = j
    out = list(lines)
    for j, spans in spans_of.items():
        line = lines[j]
        runs = [r for r in re.finditer(r"\S+", line) if not set(r.group()) <= set("─-")
                and any(r.start() < hi and r.end() > lo for lo, hi in spans)]
        for r in reversed(runs):
            line = line[:r.start()] + MASK + line[r.end():]
        out[j] = line
    return out


def normalize(text: str, volatile=(), columns=(), drop=()) -> str:
    """``text`` with its volatile parts (the defaults plus ``volatile``/``columns``) replaced by
    :data:`MASK`, the lines matching a ``drop`` expression left out and every run of spaces
    made one: two outputs that differ only there compare equal."""
    lines = [ln.rstrip() for ln in text.split("\n")]
    drops = [re.compile(rx) for rx in drop]
    lines = [ln for ln in lines if not any(d.search(ln) for d in drops)]
    lines = _mask_columns(lines, list(DEFAULT_COLUMNS) + list(columns))
    text = "\n".join(lines)
    for rx in tuple(DEFAULT_VOLATILE) + tuple(volatile):
        pattern = re.compile(rx, re.MULTILINE)

        def repl(m: re.Match) -> str:
            spans = [m.span(g) for g in range(1, (m.re.groups or 0) + 1) if m.group(g) is not None]
            if not spans:
                return MASK
            s, pos = m.group(0), m.start()
            for lo, hi in sorted(spans, reverse=True):
                s = s[:lo - pos] + MASK + s[hi - pos:]
            return s

        text = pattern.sub(repl, text)
    # alignment is not content: a masked column may be narrower or wider in the other output
    return re.sub(r"[ \t]+", " ", text).strip("\n")


# ── running and replacing ────────────────────────────────────────────────────────────────────

def render(command: str, output: str, cut: str | None = None) -> list[str]:
    """The block's lines: ``$ COMMAND`` and the output (trailing spaces and blank lines
    stripped; up to the first line matching ``cut``, then ``...``)."""
    lines = [ln.rstrip() for ln in output.replace("\r\n", "\n").split("\n")]
    if cut is not None:
        rx = re.compile(cut)
        for n, ln in enumerate(lines):
            if rx.search(ln):
                lines = lines[:n]
                while lines and not lines[-1]:
                    lines.pop()
                lines.append("...")
                break
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return [f"$ {command}"] + lines


def replace_body(text: str, sample: Sample, new_lines: list[str]) -> str:
    """``text`` (the file the sample was parsed from) with the sample's fenced body replaced."""
    lines = text.split("\n")
    body = [sample.indent + ln if ln else ln for ln in new_lines]
    return "\n".join(lines[:sample.body_start] + body + lines[sample.body_end:])


def current_body(text: str, sample: Sample) -> str:
    lines = text.split("\n")[sample.body_start:sample.body_end]
    n = len(sample.indent)
    return "\n".join(ln[n:] if ln.startswith(sample.indent) else ln for ln in lines)


def is_changed(sample: Sample, old_body: str, new_lines: list[str]) -> bool:
    """Whether the doc's block and the new output differ outside their volatile parts."""
    rules = (sample.volatile, sample.columns, sample.drop)
    return normalize(old_body, *rules) != normalize("\n".join(new_lines), *rules)


def changed_lines(sample: Sample, old_body: str, new_lines: list[str], limit: int = 20) -> str:
    """The first ``limit`` lines of a unified diff of the doc's block and the new output, both
    with their volatile parts masked (what made the block count as changed)."""
    rules = (sample.volatile, sample.columns, sample.drop)
    diff = difflib.unified_diff(normalize(old_body, *rules).split("\n"),
                                normalize("\n".join(new_lines), *rules).split("\n"),
                                "in the doc", "new output", n=0, lineterm="")
    lines = list(diff)
    more = f"\n      … {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join("      " + ln for ln in lines[:limit]) + more


def _shims(bindir: Path) -> None:
    """``jqodi`` and ``python`` in ``bindir``: this interpreter, this repository's code."""
    for name, tail in (("jqodi", '-m jqodi "$@"'), ("python", '"$@"'), ("python3", '"$@"')):
        p = bindir / name
        p.write_text(f'#!/bin/sh\nexec "{sys.executable}" {tail}\n')
        p.chmod(0o755)


def run_sample(sample: Sample, default_timeout_s: float) -> tuple[list[str], float, float]:
    """Run one sample in a fresh folder and ``JQODI_HOME``; its block's new lines, the wall
    seconds and the CPU seconds (children's user + system) it took."""
    with tempfile.TemporaryDirectory(prefix="jqodi-samples-") as tmp:
        tmp = Path(tmp)
        work, home, bindir = tmp / "work", tmp / "home", tmp / "bin"
        for d in (work, home, bindir):
            d.mkdir()
        for entry in ROOT.iterdir():
            if entry.name not in (".git",):
                (work / entry.name).symlink_to(entry)
        _shims(bindir)
        env = dict(os.environ)
        env.update(JQODI_HOME=str(home), TZ="UTC", PYTHONHASHSEED="0",
                   PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
                   PYTHONPATH=os.pathsep.join([str(ROOT / "src")] + [p for p in [env.get("PYTHONPATH")] if p]))
        env.pop("COLUMNS", None)
        timeout_s = sample.timeout_s or default_timeout_s
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        script = (sample.setup + "\n" if sample.setup else "") + sample.command
        proc = subprocess.Popen(["sh", "-c", script], cwd=work, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            raise SampleError(f"{sample.where}: {sample.command!r} ran past {timeout_s:g} s (option timeout:)") from None
        wall_s = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        output = out.decode("utf-8", errors="replace")
        if proc.returncode != sample.exit:
            last = [ln for ln in output.strip().split("\n") if ln.strip()][-1:] or [""]
            raise SampleError(f"{sample.where}: {sample.command!r} exited {proc.returncode} "
                              f"(expected {sample.exit}): {last[0][:200]}")
        for path, name in ((str(work.resolve()), "$WORKDIR"), (str(work), "$WORKDIR"),
                           (str(home.resolve()), "$JQODI_HOME"), (str(home), "$JQODI_HOME")):
            output = output.replace(path, name)
        return render(sample.command, output, sample.cut), wall_s, cpu_s


def find_files(names: list[str]) -> list[Path]:
    if names:
        return [Path(n) for n in names]
    out: list[Path] = []
    for pattern in DEFAULT_FILES:
        out.extend(sorted(ROOT.glob(pattern)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="Markdown files (default: README.md and docs/*.md)")
    ap.add_argument("--check", action="store_true", help="list changed samples, write nothing (exit 1 if any)")
    ap.add_argument("--list", action="store_true", help="list the samples and their commands")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="only samples whose file:line or command contains TEXT (repeatable: any of them)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per command (default 600)")
    args = ap.parse_args(argv)
    try:
        files = find_files(args.files)
        for f in files:
            if not f.is_file():
                raise SampleError(f"{f}: no such file")
        todo = [s for f in files for s in parse_samples(f)]
        if args.only:
            todo = [s for s in todo if any(t in s.where or t in s.command for t in args.only)]
        if args.list:
            for s in todo:
                print(f"{s.where}: $ {s.command}")
            return 0
        print(f"{len(todo)} sample(s); load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        changed: list[str] = []
        for n, s in enumerate(todo, 1):
            print(f"[{n}/{len(todo)}] {s.where}: $ {s.command}", file=sys.stderr, flush=True)
            new_lines, wall_s, cpu_s = run_sample(s, args.timeout)
            text = s.path.read_text(encoding="utf-8")
            # an earlier sample of the file may have moved this one's lines: parse it again
            s = parse_samples(s.path, text)[s.ordinal]
            old = current_body(text, s)
            verdict = "unchanged"
            if is_changed(s, old, new_lines):
                changed.append(f"{s.where}: $ {s.command}")
                verdict = "changed"
                if args.check:
                    print(changed_lines(s, old, new_lines), file=sys.stderr)
                if not args.check:
                    s.path.write_text(replace_body(text, s, new_lines), encoding="utf-8")
                    verdict = "rewritten"
            elif old.split("\n") != new_lines:
                verdict = "unchanged (volatile parts only)"
            print(f"      {verdict}; {wall_s:.1f} s wall, {cpu_s:.1f} s CPU, load average "
                  f"{os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    except SampleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check and changed:
        print("changed samples (run scripts/doc_samples.py to rewrite them):")
        for c in changed:
            print(f"  {c}")
        return 1
    print(f"{len(todo)} sample(s), {len(changed)} changed" + ("" if args.check else ", rewritten"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
