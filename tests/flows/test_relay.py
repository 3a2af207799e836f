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
