"""The Wan engine on its tiny generated twin, CPU (engines/frames/diffusion/resume.py and
cfg_batch.py cite these): killed (SIGKILL) in the middle of a chunk's denoising, the rerun goes
on from the last durable step and gives the frames of an uninterrupted render bit for bit, with
each scheduler the model runs with (rules.schedulers); the guidance passes run as one batch
(`cfg_batch`) give frames that differ from the sequential passes by rounding only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.engines.test_engines import FRAMES, ROOT, frames_of

pytestmark = pytest.mark.slow


def run(work, models, extra: dict, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROMPTREEL_TEST_KILL_AT": f"generate_frames:{kill}" if kill else "",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "engines" / "engine_run.py"),
                           "wan", str(work), str(models), str(FRAMES), json.dumps(extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("scheduler", ["UniPCMultistepScheduler",
                                       "FlowMatchEulerDiscreteScheduler",
                                       "DPMSolverMultistepScheduler"])
def test_resume_mid_denoising_is_exact(scheduler, tmp_path, models_dir):
    extra = {"scheduler": scheduler}
    whole = run(tmp_path / "whole", models_dir, extra)
    assert whole.returncode == 0, whole.stderr[-3000:]
    want = frames_of(tmp_path / "whole")
    assert len(want) == FRAMES
    # states 0-3 follow steps 1-4: killed with step 3's on disk, not in force
    killed = run(tmp_path / "resumed", models_dir, extra, kill="state:2")
    assert killed.returncode == -9, killed.stderr[-3000:]
    from tasks.frame_sink import DirectorySink

    done, state = DirectorySink(tmp_path / "resumed").resume()
    assert done == 0 and int(state["step"]) == 2 and int(state["chunk"]) == 0  # mid-denoise
    resumed = run(tmp_path / "resumed", models_dir, extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert frames_of(tmp_path / "resumed") == want, f"{scheduler}: resumed frames differ"


def test_cfg_batch_changes_the_frames_by_rounding_only(tmp_path, models_dir):
    out = {}
    for batched in (False, True):
        work = tmp_path / str(batched)
        proc = run(work, models_dir, {"cfg_batch": batched})
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[batched] = [np.asarray(Image.open(work / "frames" / n)).astype(int)
                        for n in sorted(frames_of(work))]
    diff = max(int(np.abs(a - b).max()) for a, b in zip(out[False], out[True], strict=True))
    assert diff <= 2, diff
