"""Kill anywhere, lose nothing: a render SIGKILLed inside each stage, then the same command again.

The kills are deterministic: the crash-test hook `engines.core.crash.kill_point` (inert unless
`PROMPTREEL_TEST_KILL_AT=<task>:<point>` is set) SIGKILLs the render, and the ffmpeg it runs, at
an exact point: between writing a frame's PNG and committing it (`generate_frames:frame:5`),
while ffmpeg writes its output (`<task>:ffmpeg`), or with the manifest written inside the work
directory but not renamed into place (`compose_soundtrack:commit`).

One chain on one cache saves renders: run k is killed in stage k and is also the re-run of
kill k-1 (the same command; only the hook's variable differs, and it is never hashed). A last
clean run finishes the film. Each kill checks that the stage left only untrusted work (no
committed key), and that the run committed nothing twice; the end checks that every artefact
and the final video are byte-identical to an uninterrupted render, and no work dir or
temporary file is left.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engines.core.crash import KILL_ENV
from tasks.artefacts import is_temporary
from tests.helpers import read_run
from tests.reliability.conftest import (
    SMOKE,
    Key,
    Reference,
    assert_same_artefacts,
    built,
    reap,
    render_argv,
    sha256,
    stamps,
    start,
    verify_all,
)

pytestmark = pytest.mark.slow

KILLS = {  # stage -> kill point, in the order the DAG reaches them
    "generate_frames": "generate_frames:frame:5",
    "extract_frames": "extract_frames:ffmpeg",
    "compose_soundtrack": "compose_soundtrack:commit",
    "modulate_speed": "modulate_speed:ffmpeg",
    "export_video": "export_video:ffmpeg",
}


@dataclass
class Kill:
    stage: str
    rc: int
    log: str
    before: dict[Key, tuple[int, int]]  # committed manifests before the run
    after: dict[Key, tuple[int, int]]  # ... and after the kill
    work: list[Path]  # the stage's <key>.work dirs after the kill
    listing: dict[str, int] = field(default_factory=dict)  # work dir files -> inode
    progress: dict | None = None  # generate_frames' progress.json in the work dir


class Chain:
    """Runs the kills in DAG order on one cache, each at most once, then a clean run."""

    def __init__(self, ref: Reference, base: Path):
        self.ref, self.base, self.cache = ref, base, base / "cache"
        self.kills: dict[str, Kill] = {}
        self.final: dict | None = None

    def argv(self, run_dir: Path) -> list[str]:
        return render_argv(*SMOKE, cache=self.cache, models=self.ref.models, run_dir=run_dir)

    def kill(self, stage: str) -> Kill:
        for name in KILLS:
            if name not in self.kills:
                self._run_kill(name)
            if name == stage:
                return self.kills[stage]
        raise KeyError(stage)

    def _run_kill(self, stage: str) -> None:
        before = stamps(self.cache) if self.cache.exists() else {}
        log = self.base / f"kill-{stage}.log"
        proc = start(self.argv(self.base / f"run-{stage}"), log, {KILL_ENV: KILLS[stage]})
        rc = reap(proc)
        work = sorted((self.cache / stage).glob("*.work"))
        listing = {str(p.relative_to(w)): p.stat().st_ino
                   for w in work for p in w.rglob("*") if p.is_file()}
        progress = [json.loads(p.read_text()) for p in (self.cache / stage).glob("*.work/"
                                                                               "progress.json")]
        self.kills[stage] = Kill(stage, rc, log.read_text(errors="replace"), before,
                                 stamps(self.cache), work, listing, (progress or [None])[0])

    def finish(self) -> dict:
        if self.final is None:
            self.kill("export_video")
            before = stamps(self.cache)
            run_dir = self.base / "final"
            proc = start(self.argv(run_dir), self.base / "final.log")
            assert reap(proc) == 0, (self.base / "final.log").read_text()[-3000:]
            self.final = {"record": read_run(run_dir), "before": before}
        return self.final


@pytest.fixture(scope="module")
def chain(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return Chain(reference, tmp_path_factory.mktemp("kill"))


@pytest.mark.parametrize("stage", list(KILLS))
def test_a_kill_inside_the_stage_leaves_only_untrusted_work(chain: Chain, stage: str) -> None:
    k = chain.kill(stage)
    assert k.rc == -signal.SIGKILL, k.log[-3000:]
    assert "Traceback" not in k.log
    # the stage was inside one key's work: it has a work dir and no committed artefact
    assert len(k.work) == 1, k.work
    key = k.work[0].name.removesuffix(".work")
    assert (stage, key) not in k.after
    assert not (chain.cache / stage / key).exists()
    # what was committed before this run is untouched (not recomputed, not rewritten)
    assert {x: k.after[x] for x in k.before} == k.before
    # and everything committed still verifies
    assert verify_all(chain.cache) == len(k.after)


def test_generate_frames_killed_between_a_frame_and_its_commit(chain: Chain) -> None:
    k = chain.kill("generate_frames")
    assert len(k.progress["files"]) == 5  # frames 0-4 committed
    assert max(n for n in k.listing if n.startswith("frames/")) == "frames/000005.png"
    assert not any(task == "generate_frames" for task, _ in k.after)


def test_generate_frames_resumes_after_the_last_committed_frame(chain: Chain) -> None:
    killed = chain.kill("generate_frames")
    inodes = {n: i for n, i in killed.listing.items() if n.startswith("frames/")}
    key = killed.work[0].name.removesuffix(".work")
    nxt = chain.kill("extract_frames")  # the re-run of the same command
    assert "resuming at frame 6 of 8" in nxt.log
    assert ("generate_frames", key) in nxt.after
    frames = chain.cache / "generate_frames" / key / "frames"
    now = {f"frames/{p.name}": p.stat().st_ino for p in frames.glob("*.png")}
    assert len(now) == 8
    kept = sorted(n for n in inodes if now[n] == inodes[n])
    assert kept == [f"frames/{i:06d}.png" for i in range(5)]  # frame 5 was made again


@pytest.mark.parametrize("stage, partial", [("extract_frames", "production_cut.mp4.part"),
                                            ("modulate_speed", "shot.mkv.part"),
                                            ("export_video", "smoke.mp4.part")])
def test_ffmpeg_was_killed_mid_encode_leaving_a_partial_file(chain: Chain, stage: str,
                                                            partial: str) -> None:
    k = chain.kill(stage)
    assert partial in k.listing, k.listing
    assert "manifest.json" not in k.listing


def test_a_work_dir_with_a_manifest_is_not_trusted(chain: Chain) -> None:
    k = chain.kill("compose_soundtrack")
    assert {"manifest.json", "soundtrack.wav"} <= set(k.listing)
    nxt = chain.kill("modulate_speed")  # the re-run built the soundtrack again
    key = k.work[0].name.removesuffix(".work")
    assert ("compose_soundtrack", key) in nxt.after
    wav = chain.cache / "compose_soundtrack" / key / "soundtrack.wav"
    assert wav.stat().st_ino != k.listing["soundtrack.wav"]


def test_the_rerun_finishes_byte_identical_recomputing_nothing_committed(chain: Chain) -> None:
    final = chain.finish()
    record = final["record"]
    assert sha256(Path(record["video"])) == chain.ref.video_sha
    # only export_video (killed last) was computed; every other task was a cache hit
    assert {task for task, _ in built(record)} == {"export_video"}
    assert {k: stamps(chain.cache)[k] for k in final["before"]} == final["before"]
    # every artefact equals the uninterrupted render's, file by file
    assert_same_artefacts(chain.cache, chain.ref)
    assert verify_all(chain.cache) == len(chain.ref.files)


def test_no_stale_work_dir_or_temporary_file_is_left(chain: Chain) -> None:
    chain.finish()
    leftovers = [p for p in chain.cache.rglob("*")
                 if p.name.endswith((".work", ".corrupt")) or is_temporary(p.name)]
    assert leftovers == []
