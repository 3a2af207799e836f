"""The artefact cache: keys, atomic commits, validation, corruption, locking."""

from __future__ import annotations

import errno
import json
import math
import os
import threading
import time
from pathlib import Path

import pytest

from engines.core import files
from engines.core.crash import CURRENT_TASK, KILL_ENV, kill_armed
from engines.core.errors import PromptreelError
from engines.core.files import write_bytes, write_json
from tasks.artefacts import MANIFEST, Store, artefact_key, canonical, is_temporary
from tasks.cache import key_for, run_cached


class RT:
    def __init__(self, cache: Path):
        self.cache_dir = cache


def test_key_depends_on_config_upstream_and_code_version_only() -> None:
    k = artefact_key("t", "1", {"a": 1, "b": [1, 2]}, ["u=abc"])
    assert k == artefact_key("t", "1", {"b": [1, 2], "a": 1}, ["u=abc"])
    assert k != artefact_key("t", "2", {"a": 1, "b": [1, 2]}, ["u=abc"])
    assert k != artefact_key("t", "1", {"a": 2, "b": [1, 2]}, ["u=abc"])
    assert k != artefact_key("t", "1", {"a": 1, "b": [1, 2]}, ["u=abd"])
    assert len(k) == 24 and int(k, 16) >= 0  # 24 hex characters


def test_canonical_config_keeps_nulls_and_spells_non_finite_floats() -> None:
    assert canonical({"b": None, "a": (1.0, 2)}) == {"a": [1.0, 2], "b": None}
    # JSON has no inf or nan: they are keyed by name (a prompt's stop is -inf by default)
    assert canonical({"stop": (-math.inf, math.inf, math.nan)}) == {"stop": ["-inf", "inf", "nan"]}
    keys = {artefact_key("t", "1", {"a": v}) for v in (-math.inf, math.inf, math.nan, 0.0)}
    assert len(keys) == 4


def test_json_files_are_sorted_and_byte_stable(tmp_path: Path) -> None:
    write_json(tmp_path / "m.json", {"b": 1, "a": {"d": None, "c": [1.5]}})
    assert (tmp_path / "m.json").read_text() == (
        '{\n  "a": {\n    "c": [\n      1.5\n    ],\n    "d": null\n  },\n  "b": 1\n}\n')
    with pytest.raises(ValueError):
        write_json(tmp_path / "n.json", {"x": math.inf})


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    old = os.umask(0o002)
    try:
        write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o664  # not mkstemp's 0600


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, "disk full while writing"),
                                            (errno.EACCES, "cannot write")])
def test_a_failed_write_names_the_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch,
                                                              code: int, says: str) -> None:
    def fail(*args):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(PromptreelError, match=says) as err:
        write_bytes(tmp_path / "out.bin", b"data")
    assert str(tmp_path / "out.bin") in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_temporary_names() -> None:
    assert [is_temporary(n) for n in (".x", "a.tmp", "a.part", "frame.png", "a.partial")] == [
        True, True, True, False, False]


def test_kill_hook_is_armed_only_for_its_task_and_point(monkeypatch) -> None:
    token = CURRENT_TASK.set("export_video")
    try:
        assert not kill_armed("ffmpeg")  # unset
        monkeypatch.setenv(KILL_ENV, "blend_shots:ffmpeg")
        assert not kill_armed("ffmpeg")
        monkeypatch.setenv(KILL_ENV, "export_video:ffmpeg")
        assert kill_armed("ffmpeg") and not kill_armed("commit")
    finally:
        CURRENT_TASK.reset(token)


def test_runtime_is_never_hashed(tmp_path: Path) -> None:
    assert key_for("t", "1", {"x": 1, "runtime": RT(tmp_path / "a")}) == \
        key_for("t", "1", {"x": 1, "runtime": RT(tmp_path / "b")})


def build_files(calls: list[int]):
    def build(work: Path) -> dict:
        calls.append(1)
        write_bytes(work / "out.txt", b"hello")
        (work / "sub").mkdir()
        write_bytes(work / "sub" / "data.bin", b"\x00" * 100)
        return {"n": 2}
    return build


def test_commit_then_reuse(tmp_path: Path) -> None:
    calls: list[int] = []
    params = {"x": 1, "runtime": RT(tmp_path)}
    a = run_cached("demo", "1", params, build_files(calls))
    b = run_cached("demo", "1", params, build_files(calls))
    assert calls == [1] and a.key == b.key and a.meta == {"n": 2}
    manifest = json.loads((Path(a.path) / MANIFEST).read_text())
    assert manifest["files"]["out.txt"]["size"] == 5
    assert not list(tmp_path.glob("demo/*.work"))


def test_work_dir_is_kept_for_a_resume_unless_fresh(tmp_path: Path) -> None:
    store = Store(tmp_path)
    write_bytes(store.begin("demo", "k").path / "part.txt", b"1")
    assert (store.begin("demo", "k").path / "part.txt").exists()  # resumable: kept
    assert not (store.begin("demo", "k", fresh=True).path / "part.txt").exists()


def test_commit_records_config_and_drops_leftovers(tmp_path: Path) -> None:
    work = Store(tmp_path).begin("demo", "k")
    write_bytes(work.path / "keep.txt", b"ok")
    (work.path / ".crashed.tmp.d").mkdir()  # a leftover temporary folder, with a file inside
    (work.path / ".crashed.tmp.d" / "inner.tmp").write_bytes(b"x")
    (work.path / "frames").mkdir()
    (work.path / "frames" / "000001.png.part").write_bytes(b"half")
    art = work.commit(config={"a": (1, 2)}, code_version="3", upstream=["u=abc"])
    manifest = json.loads((Path(art.path) / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["keep.txt"] and manifest["meta"] == {}
    assert (manifest["config"], manifest["code_version"], manifest["upstream"]) == (
        {"a": [1, 2]}, "3", ["u=abc"])
    assert sorted(p.name for p in Path(art.path).rglob("*")) == ["frames", "keep.txt", MANIFEST]
    assert art.file("keep.txt") == Path(art.path) / "keep.txt"


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete", "manifest"])
def test_corrupt_artefact_is_detected_and_rebuilt(tmp_path: Path, damage: str) -> None:
    calls: list[int] = []
    params = {"x": 1, "runtime": RT(tmp_path)}
    a = run_cached("demo", "1", params, build_files(calls))
    target = Path(a.path) / "sub" / "data.bin"
    if damage == "truncate":
        target.write_bytes(b"\x00" * 10)
    elif damage == "alter":
        time.sleep(0.01)
        target.write_bytes(b"\x01" * 100)
    elif damage == "delete":
        target.unlink()
    else:
        (Path(a.path) / MANIFEST).write_text("{not json")
    b = run_cached("demo", "1", params, build_files(calls))
    assert calls == [1, 1]
    assert (Path(b.path) / "sub" / "data.bin").read_bytes() == b"\x00" * 100
    assert Store(tmp_path).load("demo", a.key) is not None


def test_crashed_build_leaves_nothing_that_looks_done(tmp_path: Path) -> None:
    def boom(work: Path) -> dict:
        write_bytes(work / "half.txt", b"x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_cached("demo", "1", {"x": 1, "runtime": RT(tmp_path)}, boom)
    key = key_for("demo", "1", {"x": 1})
    assert Store(tmp_path).load("demo", key) is None
    assert not (tmp_path / "demo" / key).exists()


def test_two_concurrent_builders_build_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow(work: Path) -> dict:
        calls.append(1)
        time.sleep(0.3)
        write_bytes(work / "out.txt", b"ok")
        return {}

    params = {"x": 1, "runtime": RT(tmp_path)}
    results = []
    threads = [threading.Thread(target=lambda: results.append(run_cached("demo", "1", params, slow)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [1] and len({r.key for r in results}) == 1


def test_atomic_output_makes_missing_folders_and_never_leaves_a_part_file(tmp_path: Path) -> None:
    """engines/core/files.atomic_output (ffmpeg's outputs): the folders above the file are made,
    a `.part` left by a killed run is replaced, and a failed write leaves neither file."""
    target = tmp_path / "a" / "b" / "out.mp4"
    with files.atomic_output(target) as tmp:
        assert tmp == target.with_name("out.mp4.part") and not tmp.exists()
        tmp.write_bytes(b"video")
    assert target.read_bytes() == b"video" and sorted(p.name for p in target.parent.iterdir()) == [
        "out.mp4"]
    stale = target.with_name("out.mp4.part")
    stale.write_bytes(b"half of a killed encode")
    with pytest.raises(RuntimeError, match="encode failed"):
        with files.atomic_output(target) as tmp:
            assert not tmp.exists()  # the killed run's half-written file is gone first
            tmp.write_bytes(b"half")
            raise RuntimeError("encode failed")
    assert target.read_bytes() == b"video" and not stale.exists()
