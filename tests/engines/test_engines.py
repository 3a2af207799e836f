"""Every engine in the registry (engines/frames/registry.py), driven by the registry: a newly
registered engine is tested here without editing this file.

- its conf file `conf/engine/<name>.yaml` exists, names it, holds exactly its settings' keys at
  their defaults, each with a comment (house rule 7), and `debug=smoke` has settings for it;
- it declares what the seam asks for (engines/frames/base.py);
- it renders 2 frames on tiny generated models through the task's own path;
- killed (SIGKILL) after its first committed frame, and in the middle of a frame's work when it
  saves state there, the rerun resumes and gives byte-identical frames.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engines.frames.base import EngineSettings
from engines.frames.registry import ENGINES

ROOT = Path(__file__).resolve().parents[2]
NAMES = sorted(ENGINES)
FRAMES = 2


def run(name: str, work: Path, models: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PROMPTREEL_TEST_KILL_AT": f"generate_frames:{kill}" if kill else ""}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "engines" / "engine_run.py"), name,
                           str(work), str(models), str(FRAMES)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def frames_of(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "frames").glob("*.png"))}


@pytest.mark.parametrize("name", NAMES)
def test_conf_file_is_the_settings_with_a_comment_on_every_key(name):
    engine = ENGINES[name]
    path = ROOT / "conf" / "engine" / f"{name}.yaml"
    text = path.read_text()
    data = yaml.safe_load(text)
    assert data["name"] == name == engine.NAME  # one name, one string
    assert engine.Settings.model_validate(data) == engine.Settings()
    assert set(data) == set(engine.Settings.model_fields)
    for key in data:
        line = next(ln for ln in text.splitlines() if re.match(rf"{re.escape(key)}\s*:", ln))
        assert "#" in line, f"{path.name}: {key} has no comment"
    smoke = yaml.safe_load((ROOT / "conf" / "debug" / "smoke.yaml").read_text())
    assert name in smoke["engines"], "conf/debug/smoke.yaml needs engines.<name> (tiny settings)"
    engine.Settings.model_validate({**smoke["engines"][name], "name": name})


@pytest.mark.parametrize("name", NAMES)
def test_the_engine_declares_the_seam(name):
    engine = ENGINES[name]
    assert issubclass(engine.Settings, EngineSettings)
    assert engine.Settings.model_fields["name"].default == name
    assert isinstance(engine.CODE_VERSION, str) and engine.CODE_VERSION
    for fn in ("models", "meta_models", "memory_step", "render"):
        assert callable(getattr(engine, fn)), f"{name} lacks {fn}"
    field, noun = engine.MEMORY_UNIT
    assert field in engine.Settings.model_fields and noun
    from tests.engines.engine_run import film_models

    wanted = engine.models(engine.Settings(), film_models())
    assert set(wanted) <= set(engine.MODELS) and all(wanted.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_renders_and_resumes_byte_identical_after_sigkill(name, tmp_path, models_dir):
    whole = run(name, tmp_path / "whole", models_dir)
    assert whole.returncode == 0, whole.stderr[-3000:]
    want = frames_of(tmp_path / "whole")
    assert sorted(want) == ["000000.png", "000001.png"]
    for point in ("frame:1", "state:1"):
        work = tmp_path / point.replace(":", "_")
        killed = run(name, work, models_dir, kill=point)
        if point.startswith("state") and killed.returncode == 0:
            continue  # the engine saves no state between frames: nothing to kill there
        assert killed.returncode == -9, (point, killed.stderr[-3000:])
        resumed = run(name, work, models_dir)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert frames_of(work) == want, f"{name}: resumed after a kill at {point} differs"
