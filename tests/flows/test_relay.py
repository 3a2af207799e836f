"""The relay preset (conf/film/relay.yaml) from the command line under debug=smoke: two shots by
two diffusion engines (Wan, then LTX-Video starting from Wan's last frame with
`continue: previous`), the second long enough for two chunks (the second one conditioned on the
first), on tiny generated pipelines. Shots are shortened to a few frames to stay quick."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import read_run, run_cli


def test_relay_renders_under_debug_smoke(models_dir: Path, tmp_path: Path) -> None:
    from engines.media.ffmpeg import probe

    # 16 fps: 8 Wan frames (one chunk), then 12 LTX frames (chunks 0-8 and 7-15)
    run_cli("film=relay", "debug=smoke", "film.shots.0.seconds=0.5",
            "film.shots.1.seconds=0.75", cache=tmp_path / "cache", models=models_dir,
            run_dir=tmp_path / "run", timeout=900)
    record = read_run(tmp_path / "run")
    assert {"generated_wan_tiny", "generated_ltx_tiny"} <= set(record["models"])
    assert [s["name"] for s in record["timeline"]["shots"]] == ["dusk", "night"]
    info = probe(Path(record["video"]))
    assert info.frames == record["timeline"]["total_frames"] == 20
    frames = sorted((tmp_path / "cache" / "generate_frames").glob("*/frames/*.png"))
    assert len(frames) == 20  # both shots' frames, committed in the artefact cache
