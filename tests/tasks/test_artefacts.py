"""The artefact cache: keys, atomic commits, validation, corruption, locking."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from engines.core.files import write_bytes
from tasks.artefacts import MANIFEST, Store, artefact_key
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
