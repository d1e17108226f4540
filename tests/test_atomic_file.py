"""trt_neg.atomic_file: whole files or nothing, with the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from trt_neg.atomic_file import atomic_path, atomic_write_text


def test_written_whole_with_the_usual_permissions(tmp_path):
    mask = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}\n", fsync=True)
    finally:
        os.umask(mask)
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0666 less the umask, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the n")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_unwritable_reason_is_found_before_the_work(tmp_path):
    from trt_neg.atomic_file import unwritable_reason

    (tmp_path / "f").write_text("x")
    assert unwritable_reason(tmp_path / "ok.md") is None and list(tmp_path.iterdir()) == [tmp_path / "f"]
    assert unwritable_reason(tmp_path) == "is a directory"
    assert unwritable_reason(tmp_path / "missing" / "r.md") == f"directory {tmp_path / 'missing'} does not exist"
    assert unwritable_reason(tmp_path / "f" / "r.md", make_parents=True).startswith(f"cannot write in {tmp_path / 'f'}")
    assert unwritable_reason(tmp_path / "new" / "r.md", make_parents=True) is None and (tmp_path / "new").is_dir()


def test_the_temporary_file_is_a_hidden_sibling_and_the_mode_is_exactly_0666_less_the_umask(tmp_path):
    """Beside the target (os.replace never crosses a file system) and hidden; no execute bit under any umask."""
    mask = os.umask(0)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".a.json.") and tmp.name.endswith(".tmp")
            tmp.write_text("x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666


def test_unwritable_reason_makes_missing_parents_when_asked(tmp_path):
    from trt_neg.atomic_file import unwritable_reason

    target = tmp_path / "a" / "b" / "out.json"
    assert unwritable_reason(target) == f"directory {target.parent} does not exist"
    assert unwritable_reason(target, make_parents=True) is None and target.parent.is_dir()
