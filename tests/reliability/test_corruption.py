"""Corruption is detected: damaged frames, manifests, converted checkpoints, WAVs and videos in a
committed cache are found, moved aside and made again, never passed downstream.

One copy of the reference cache (hard links kept, as a real cache has them between the frames of
generate_frames, extract_frames and refine_frames) and of the models directory takes all the
damage at once; one re-run must rebuild exactly the damaged artefacts, log each one, and end
with every artefact and the video equal to the reference. Resumable work (generate_frames'
work dir) and the checkpoint conversion are checked directly, without a render.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tasks.artefacts import MANIFEST
from tests.helpers import read_run
from tests.reliability.conftest import (
    SMOKE,
    Reference,
    assert_same_artefacts,
    built,
    committed,
    run_patched,
    sha256,
    verify_all,
)

CKPT = Path("vqgan/generated_vqgan_f16_tiny/last.safetensors")  # converted by engines/safe_ckpt


def truncate(path: Path, keep: float = 0.5) -> None:
    with open(path, "r+b") as f:  # in place: every hard link to it is damaged too
        f.truncate(int(path.stat().st_size * keep))


def flip_byte(path: Path, at: float = 0.5) -> None:
    with open(path, "r+b") as f:
        f.seek(int(path.stat().st_size * at))
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def downstream(cache: Path, task: str, of: str) -> str:
    """The key of the `task` artefact whose upstream is the artefact `of`."""
    keys = [k for (t, k), d in committed(cache).items() if t == task
            and any(of in u for u in json.loads((d / MANIFEST).read_text())["upstream"])]
    assert len(keys) == 1, (task, of, keys)
    return keys[0]


def manifest_of(cache: Path, task: str, key: str) -> dict:
    return json.loads((cache / task / key / MANIFEST).read_text())


@pytest.fixture(scope="module")
def damaged(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("corrupt")
    cache = reference.copy_cache(base / "cache")
    models = base / "models"
    shutil.copytree(reference.models, models)
    arts = reference.record["artefacts"]
    extract = arts["shots"]  # the extract_frames keys of shots 0 and 1
    gen0 = manifest_of(cache, "extract_frames", extract[0])["upstream"][0].split("=")[1]
    refine = [downstream(cache, "refine_frames", k) for k in extract]
    speed1 = downstream(cache, "modulate_speed", refine[1])
    blend = downstream(cache, "blend_shots", speed1)
    soundtrack, export = arts["compose_soundtrack"], arts["export_video"]

    truncate(cache / "generate_frames" / gen0 / "frames" / "000003.png")  # + its 2 hard links
    flip_byte(cache / "extract_frames" / extract[1] / "production_cut.mp4")  # same size
    text = (cache / "modulate_speed" / speed1 / MANIFEST).read_text()  # one hex digit of a hash
    at = text.index('"sha256": "') + len('"sha256": "')
    (cache / "modulate_speed" / speed1 / MANIFEST).write_text(
        text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1:])
    truncate(cache / "compose_soundtrack" / soundtrack / "soundtrack.wav")
    truncate(cache / "blend_shots" / blend / "film.mkv")
    truncate(cache / "export_video" / export / "smoke.mp4")
    truncate(models / CKPT)
    damaged_keys = {("generate_frames", gen0), ("extract_frames", extract[0]),
                    ("refine_frames", refine[0]), ("extract_frames", extract[1]),
                    ("modulate_speed", speed1), ("compose_soundtrack", soundtrack),
                    ("blend_shots", blend), ("export_video", export)}

    proc = run_patched(None, *SMOKE, cache=cache, models=models, run_dir=base / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"cache": cache, "models": models, "record": read_run(base / "run"),
            "log": proc.stdout + proc.stderr, "damaged": damaged_keys}


def test_exactly_the_damaged_artefacts_are_rebuilt(damaged: dict) -> None:
    assert built(damaged["record"]) == damaged["damaged"]


def test_each_damage_is_logged_and_kept_aside_with_the_reason(damaged: dict) -> None:
    cache: Path = damaged["cache"]
    assert damaged["log"].count("corrupt artefact, rebuilding it") == len(damaged["damaged"])
    why = {(task, key): (cache / task / f"{key}.corrupt" / "WHY").read_text()
           for task, key in damaged["damaged"]}
    reasons = {task: text for (task, _), text in why.items()}
    assert "000003.png: size" in why[("generate_frames", next(
        k for t, k in damaged["damaged"] if t == "generate_frames"))]
    assert "content differs from its manifest hash" in reasons["modulate_speed"]
    assert "soundtrack.wav: size" in reasons["compose_soundtrack"]
    assert "film.mkv: size" in reasons["blend_shots"]
    assert "smoke.mp4: size" in reasons["export_video"]
    assert sum("production_cut.mp4: content differs" in t for t in why.values()) == 1


def test_nothing_damaged_reached_the_video(damaged: dict, reference: Reference) -> None:
    assert sha256(Path(damaged["record"]["video"])) == reference.video_sha
    assert_same_artefacts(damaged["cache"], reference)
    assert verify_all(damaged["cache"]) == len(reference.files)


def test_a_truncated_converted_checkpoint_is_converted_again(damaged: dict,
                                                             reference: Reference) -> None:
    assert sha256(damaged["models"] / CKPT) == sha256(reference.models / CKPT)


def test_an_altered_converted_checkpoint_is_converted_again(tmp_path: Path) -> None:
    """Same size, new bytes, a later mtime (an edit, a bad copy): the recorded sha256 catches
    it. (Like weights.check_file, a change that keeps size and mtime is not looked for.)"""
    import torch

    from engines.models.safe_ckpt import cached_safetensors

    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}}, ckpt)
    out = cached_safetensors(ckpt)
    good = sha256(out)
    flip_byte(out, 0.9)
    st = out.stat()
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # one second later
    assert sha256(out) != good
    assert sha256(cached_safetensors(ckpt)) == good
    first = out.stat().st_mtime_ns
    assert cached_safetensors(ckpt).stat().st_mtime_ns == first  # intact: not converted again


# ------------------------------------------------------------- resumable work (frame sink)
def committed_frames(work: Path, n: int = 3) -> dict:
    import numpy as np
    import torch

    from tasks.frame_sink import DirectorySink

    sink = DirectorySink(work)
    for i in range(n):
        image = np.full((8, 8, 3), 40 * i, dtype=np.uint8)
        sink.commit(i, image, {"z": torch.full((2,), float(i))}, {"loss": 1.0 / (i + 1)})
    return {"n": n}


@pytest.mark.parametrize("damage, resumes_at", [
    (None, 3),
    ("truncate frame", 0), ("alter frame", 0), ("truncate state", 0), ("garble progress", 0),
    ("frame past the count", 3),  # a frame written but not committed: ignored, made again
    ("state past the count", 3),  # a newer state written, progress not: the old one holds
    ("delete state", 0),
])
def test_resumable_work_is_checked_before_it_is_trusted(tmp_path: Path, damage: str | None,
                                                        resumes_at: int) -> None:
    from tasks.frame_sink import DirectorySink

    committed_frames(tmp_path)
    if damage == "truncate frame":
        truncate(tmp_path / "frames" / "000001.png")
    elif damage == "alter frame":
        flip_byte(tmp_path / "frames" / "000001.png", 0.6)
    elif damage in ("truncate state", "delete state"):
        state_file = tmp_path / json.loads((tmp_path / "progress.json").read_text())["state"]["name"]
        truncate(state_file) if damage == "truncate state" else state_file.unlink()
    elif damage == "state past the count":
        (tmp_path / "state-000099.pt").write_bytes(b"a state cut short by a kill")
    elif damage == "garble progress":
        (tmp_path / "progress.json").write_text('{"files": [')
    elif damage == "frame past the count":
        (tmp_path / "frames" / "000003.png").write_bytes(b"half a png")
    done, state = DirectorySink(tmp_path).resume()
    assert done == resumes_at
    assert (state is None) == (resumes_at == 0)
    if state is not None:
        assert state["z"].tolist() == [2.0, 2.0]
        assert sorted(p.name for p in tmp_path.glob("state-*.pt")) == sorted(
            ["state-000002.pt"] + (["state-000099.pt"] if damage == "state past the count" else []))


def test_a_commit_drops_leftover_temporary_files(tmp_path: Path) -> None:
    from tasks.artefacts import Store

    work = Store(tmp_path).begin("demo", "k" * 24)
    (work.path / "frames").mkdir()
    (work.path / "frames" / "000000.png").write_bytes(b"png")
    (work.path / "frames" / ".000001.png.x1y2.tmp").write_bytes(b"half")  # atomic write cut
    (work.path / "shot.mkv.part").write_bytes(b"half")  # ffmpeg output cut
    (work.path / ".speed-abc").mkdir()
    (work.path / ".speed-abc" / "000000.png").write_bytes(b"png")
    art = work.commit({})
    files = sorted(str(p.relative_to(art.path)) for p in Path(art.path).rglob("*"))
    assert files == ["frames", "frames/000000.png", MANIFEST]
    assert list(json.loads((Path(art.path) / MANIFEST).read_text())["files"]) == \
        ["frames/000000.png"]
