"""A diffusion render killed in the middle of its second chunk's denoising, through the command
line: `film=wan_garden debug=smoke` with a one-second shot (16 frames: two chunks of the tiny
Wan's 9 frames overlapping by 2, 4 denoising steps each, a durable checkpoint after every step).

The generate_frames sink numbers its state files: chunk 0 writes states 0-3 (after each step)
and state 4 with its last committed frame; chunk 1 writes state 5 after its first step and state
6 after its second. SIGKILL at `generate_frames:state:6` (the checkpoint is on disk, not yet in
force) leaves chunk 1 mid-denoise. The same command again resumes chunk 1 from its step-1
checkpoint (no committed step is computed again: chunk 0 is not denoised again, chunk 1 starts
at step 2: its step-2 checkpoint was not yet in force), recomputes no committed artefact, and gives a video byte-identical to an
uninterrupted render. A failed VAE decode (a simulated CUDA out-of-memory) keeps the latents and
decodes again with VAE tiling.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from engines.core.crash import KILL_ENV
from tests.helpers import read_run
from tests.reliability.conftest import built, reap, render_argv, sha256, stamps, start

pytestmark = pytest.mark.slow

FILM = ("film=wan_garden", "debug=smoke", "film.shots.0.seconds=1")


def render(base: Path, name: str, models: Path, cache: Path, env: dict | None = None,
           patch: str | None = None) -> tuple[int, str, Path]:
    run_dir = base / name
    log = base / f"{name}.log"
    proc = start(render_argv(*FILM, cache=cache, models=models, run_dir=run_dir, patch=patch),
                 log, env)
    rc = reap(proc)
    return rc, log.read_text(), run_dir


@pytest.fixture(scope="module")
def renders(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("diffusion_kill")
    out = {"base": base}
    rc, log, run_dir = render(base, "whole", models_dir, base / "whole_cache")
    assert rc == 0, log[-4000:]
    out["whole"] = (log, read_run(run_dir))
    cache = base / "cache"
    rc, log, _ = render(base, "killed", models_dir, cache,
                        env={KILL_ENV: "generate_frames:state:6"})
    out["killed"] = (rc, log, stamps(cache))
    rc, log, run_dir = render(base, "rerun", models_dir, cache)
    assert rc == 0, log[-4000:]
    out["rerun"] = (log, read_run(run_dir), stamps(cache))
    return out


def test_the_kill_lands_in_chunk_2s_denoising(renders):
    rc, log, _ = renders["killed"]
    assert rc == -signal.SIGKILL, log[-4000:]
    assert "chunk 1: denoising steps 1-4 of 4" in log
    assert "Traceback" not in log


def test_the_rerun_recomputes_no_committed_step_and_the_video_is_identical(renders):
    _, _, before = renders["killed"]
    log, record, after = renders["rerun"]
    assert "chunk 1: denoising steps 2-4 of 4 (resumed)" in log, log[-4000:]  # step 1 was durable
    assert "chunk 0: denoising" not in log  # chunk 0's frames were committed: not denoised again
    assert {k: after[k] for k in before} == before  # committed artefacts untouched
    assert not built(record) & set(before)
    whole = renders["whole"][1]
    assert sha256(Path(record["video"])) == sha256(Path(whole["video"]))


OOM_ONCE = """
import torch
from engines.frames import wan
_decode, _calls = wan.decode, []
def decode(pipe, latents, **chunk):
    _calls.append(getattr(pipe.vae, "use_tiling", None))
    if len(_calls) == 1:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated in the VAE decode)")
    assert pipe.vae.use_tiling, "the retry should decode with VAE tiling"
    print("decode retried with tiling", flush=True)
    return _decode(pipe, latents, **chunk)
wan.decode = decode
"""


def test_an_out_of_memory_vae_decode_is_retried_with_tiling(renders, models_dir):
    base = renders["base"]
    rc, log, run_dir = render(base, "oom", models_dir, base / "oom_cache", patch=OOM_ONCE)
    assert rc == 0, log[-4000:]
    assert "VAE decode ran out of memory: retrying with VAE tiling" in log
    assert "decode retried with tiling" in log
    # the latents were kept: chunk 0 was denoised once
    assert log.count("chunk 0: denoising steps 1-4 of 4") == 1
