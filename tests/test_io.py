"""Atomic writes: whole files or nothing, normal permissions, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cosanneal.io import atomic_open, atomic_save, atomic_write_json, atomic_write_text


def test_write_replaces_whole_file_with_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_save_keeps_the_suffix_for_writers_that_need_it(tmp_path: Path) -> None:
    seen: list[str] = []

    def writer(path: str) -> None:
        seen.append(path)
        Path(path).write_text("png")

    atomic_save(tmp_path / "plot.png", writer)
    assert seen[0].endswith(".png") and (tmp_path / "plot.png").read_text() == "png"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
