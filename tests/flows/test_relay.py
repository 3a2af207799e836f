"""The relay preset (conf/film/relay.yaml) from the command line under debug=smoke: two shots by
two diffusion engines (Wan, then LTX-Video starting from Wan's last frame with
`continue: previous`), the second long enough for two chunks (the second one conditioned on the
first), on tiny generated pipelines, with the tiny MusicGen soundtrack. Shots are shortened to a
few frames to stay quick. A second run computes nothing."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import read_run, run_cli

SHORT = ("film=relay", "debug=smoke", "film.shots.0.seconds=0.5", "film.shots.1.seconds=0.75")


def test_relay_renders_under_debug_smoke_and_again_computes_nothing(models_dir: Path,
                                                                    tmp_path: Path) -> None:
    from engines.media.ffmpeg import probe

    cache = tmp_path / "cache"
    # 16 fps: 8 Wan frames (one chunk), then 12 LTX frames (chunks 0-8 and 7-15)
    run_cli(*SHORT, cache=cache, models=models_dir, run_dir=tmp_path / "run", timeout=900)
    record = read_run(tmp_path / "run")
    assert {"generated_wan_tiny", "generated_ltx_tiny"} <= set(record["models"])
    assert [s["name"] for s in record["timeline"]["shots"]] == ["dusk", "night"]
    info = probe(Path(record["video"]))
    assert info.frames == record["timeline"]["total_frames"] == 20
    assert info.audio is not None, "the MusicGen soundtrack is muxed in"
    frames = sorted((cache / "generate_frames").glob("*/frames/*.png"))
    assert len(frames) == 20  # both shots' frames, committed in the artefact cache

    manifests = {str(p): p.stat().st_mtime_ns for p in cache.glob("*/*/manifest.json")}
    run_cli(*SHORT, cache=cache, models=models_dir, run_dir=tmp_path / "again", timeout=900)
    again = read_run(tmp_path / "again")
    assert {str(p): p.stat().st_mtime_ns for p in cache.glob("*/*/manifest.json")} == manifests
    assert all(row["cached"] for row in again["tasks"]), again["tasks"]
    assert Path(again["video"]).read_bytes() == Path(record["video"]).read_bytes()


def test_relay_at_full_size_chains_ltx_chunks_and_needs_an_image_model_to_continue() -> None:
    """The real preset, as read (nothing loads): LTX-Video's 12 s shot is two chunks of allowed
    lengths (8k+1: 161, then 41 covering the rest with the overlap), and a shot that continues
    from the one before must use a model that takes an image: Wan 2.1 1.3B is refused, naming
    the key and the Wan models that would do."""
    import pytest

    from engines.core.errors import ConfigError
    from engines.frames.diffusion.chunks import plan_chunks
    from engines.models.diffusers import rules_of
    from engines.models.registry import load_entry
    from flows.render import compose_config
    from tests.helpers import ROOT

    cfg = compose_config(["film=relay"])
    night = cfg.shot_plans()[1]
    assert night.continues and len(night.frames) == 12 * 16
    rules = rules_of(load_entry("diffusers", "ltx_video_2b", ROOT / "conf"))
    chunks = plan_chunks(len(night.frames), rules.clip_frames, 8, rules.frames)
    assert [c.length for c in chunks] == [161, 41] and chunks[1].start == 153
    with pytest.raises(ConfigError) as err:
        compose_config(["film=relay", "film.shots.1.engine=wan"])
    assert err.value.key == "film.shots.1.continue"
    assert "wan2_2_ti2v_5b" in str(err.value)  # the Wan models that take an image
