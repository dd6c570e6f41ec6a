"""Reading a file a user names — a scenario, a link trace, a device file: a regular file or a pipe.

A pipe (``jqodi plan /dev/stdin``, ``jqodi plan <(cat s.yaml)``, a FIFO from ``mkfifo``) is read
like a file, but only once: its bytes are kept for the process, so that a command that reads its
scenario twice (``jqodi plan`` does) reads the same text the second time. A directory, a file that is
not there, one larger than its kind allows and any other special file (``/dev/zero``: reading would
never end) are one-line :class:`~jqodi.errors.ScenarioError`\\ s naming the path.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from jqodi.core.validation import one_line
from jqodi.errors import ScenarioError

__all__ = ["is_pipe", "read_user_file"]

#: The bytes of every pipe read in this process, by (device, inode) of the pipe.
_PIPES: dict[tuple[int, int], bytes] = {}


def is_pipe(path: str | os.PathLike) -> bool:
    """Whether ``path`` is (or links to) a pipe or FIFO."""
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_user_file(path: Path, max_bytes: int, kind: str, *, missing: str = "file not found") -> bytes:
    """At most ``max_bytes`` bytes of the ``kind`` (``scenario file``, ``trace file``) at ``path``, a
    regular file or a pipe (see the module docstring); ``missing``: the problem when it is not there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: {missing}") from None
    except (OSError, ValueError) as e:
        raise ScenarioError(one_line(f"{path}: unreadable: {getattr(e, 'strerror', None) or e}")) from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(f"{path}: is a directory, not a {kind}")
    pipe = stat.S_ISFIFO(st.st_mode)
    if not (pipe or stat.S_ISREG(st.st_mode)):
        raise ScenarioError(f"{path}: not a regular file")
    key = (st.st_dev, st.st_ino)
    if pipe and key in _PIPES:
        raw = _PIPES[key]
    else:
        try:
            with open(path, "rb") as f:
                raw = f.read(max_bytes + 1)
        except OSError as e:
            raise ScenarioError(one_line(f"{path}: unreadable: {e.strerror or e}")) from None
        if pipe:
            _PIPES[key] = raw
    if len(raw) > max_bytes:
        raise ScenarioError(f"{path}: larger than {max_bytes // 2**20} MiB, not a {kind}")
    return raw
