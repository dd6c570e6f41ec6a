"""save_json's file modes: results follow the umask (and a replaced file keeps its mode), secrets
are written readable by their owner only."""
import json
import os
import stat

import pytest

from jqodi.render.report import save_json


@pytest.fixture
def umask():
    old = os.umask(0o022)
    try:
        yield lambda m: os.umask(m)
    finally:
        os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_results_follow_the_umask(tmp_path, umask):
    assert _mode(save_json(tmp_path / "r.json", {"energy_j": 1.5})) == 0o644
    umask(0o027)
    assert _mode(save_json(tmp_path / "group.json", [1])) == 0o640
    umask(0o077)
    assert _mode(save_json(tmp_path / "own.json", [1])) == 0o600
    assert json.loads((tmp_path / "r.json").read_text()) == {"energy_j": 1.5}


def test_a_replaced_result_keeps_its_mode(tmp_path, umask):
    p = save_json(tmp_path / "r.json", {"v": 1})
    os.chmod(p, 0o664)
    save_json(p, {"v": 2})
    assert _mode(p) == 0o664 and json.loads(p.read_text()) == {"v": 2}


def test_secrets_are_owner_only_whatever_the_umask_or_old_mode(tmp_path, umask):
    umask(0o000)
    p = save_json(tmp_path / "key.json", {"token": "s3cret"}, private=True)
    assert _mode(p) == 0o600
    os.chmod(p, 0o644)
    save_json(p, {"token": "new"}, private=True)
    assert _mode(p) == 0o600 and json.loads(p.read_text()) == {"token": "new"}
    assert [q.name for q in tmp_path.iterdir()] == ["key.json"]  # no temporary file left behind
