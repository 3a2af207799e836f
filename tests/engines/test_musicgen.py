"""engines/music/musicgen.py on the generated tiny MusicGen (real audiocraft layout, random weights):
exact lengths, seeded determinism, seams that are not restarts, settings, registry entries,
safe loading and the prompt derived from the film's prompts."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from engines.core.errors import ConfigError, MissingWeightsError, UnsafeCheckpointError
from engines.models import audiocraft, loaded, registry
from engines.music import musicgen

ROOT = Path(__file__).resolve().parents[2]
SOUNDTRACK = ROOT / "conf" / "soundtrack"
SR = 32000


def entry(name: str) -> registry.ModelEntry:
    return registry.load_entry("musicgen", name, ROOT / "conf")


TINY = entry("generated_musicgen_tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("musicgen") / "generated_musicgen_tiny"
    audiocraft.build_generated(entry("generated_musicgen_tiny"), out)
    return out


def compose(model: Path, seconds: float, seed: int = 3, **kw) -> np.ndarray:
    audio, sr = musicgen.compose(TINY, model, prompt="calm piano over rain", duration_s=seconds,
                                 seed=seed, **kw)
    assert sr == SR and audio.dtype == np.float32 and audio.ndim == 2
    return audio


# --- the generated model -------------------------------------------------------------------

def test_generated_model_is_deterministic_and_in_published_layout(tiny, tmp_path):
    import torch

    again = tmp_path / "again"
    audiocraft.build_generated(entry("generated_musicgen_tiny"), again)
    for name in audiocraft.FILES:
        assert (tiny / name).read_bytes() == (again / name).read_bytes()
        pkg = torch.load(tiny / name, weights_only=True)
        assert set(pkg) == {"xp.cfg", "best_state"} and isinstance(pkg["xp.cfg"], str)


def test_audiocraft_get_pretrained_loads_it(tiny):
    """The same directory loads through audiocraft's own public entry point."""
    from audiocraft.models import MusicGen

    model = MusicGen.get_pretrained(str(tiny), device="cpu")
    assert (model.sample_rate, model.frame_rate, model.max_duration) == (SR, 50, 30.0)
    ours = loaded.load(TINY, tiny, "cpu")
    assert ours is loaded.load(TINY, tiny, "cpu")  # cached per process
    assert ours.lm.card == model.lm.card == 64


def test_melody_model_cannot_be_generated(tmp_path):
    with pytest.raises(ConfigError, match="arch.melody.*demucs"):
        audiocraft.build_generated(SimpleNamespace(arch={"melody": True}, seed=0), tmp_path)


# --- compose -------------------------------------------------------------------------------

@pytest.mark.parametrize("seconds", [1.0, 7.3])
def test_compose_length_is_exact(tiny, seconds):
    audio = compose(tiny, seconds)
    assert audio.shape == (1, round(seconds * SR))
    assert np.isfinite(audio).all() and audio.std() > 1e-3


@pytest.mark.slow
def test_compose_35s_continues_past_one_window_exactly(tiny):
    audio = compose(tiny, 35.0)  # defaults: a 30 s window, then one continued with 10 s context
    assert audio.shape == (1, 35 * SR)
    assert np.isfinite(audio).all() and audio[:, -SR:].std() > 1e-3


def test_same_seed_same_bytes_other_seed_other_music(tiny):
    a = compose(tiny, 7.3, seed=5, window_s=3.0, overlap_s=1.0)
    b = compose(tiny, 7.3, seed=5, window_s=3.0, overlap_s=1.0)
    c = compose(tiny, 7.3, seed=6, window_s=3.0, overlap_s=1.0)
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a, c)


def block_rms(x: np.ndarray, block: int) -> np.ndarray:
    n = len(x) // block
    return np.sqrt((x[: n * block].reshape(n, block) ** 2).mean(axis=1))


def test_seams_are_not_restarts(tiny, caplog):
    """Windows of 3 s with 1 s overlap: cross-fades over 2-3 s, 4-5 s and 6-7 s. Level and
    sample-to-sample change inside and at the edges of every seam match the rest."""
    with caplog.at_level("INFO", logger="engines.music.musicgen"):
        x = compose(tiny, 9.0, window_s=3.0, overlap_s=1.0)[0].astype(np.float64)
    assert [r.getMessage() for r in caplog.records] == [
        "soundtrack: window 1/4 (3.0 s)"] + [
        f"soundtrack: window {i}/4 (2.0 s after 1.0 s of context)" for i in (2, 3, 4)]
    block = SR // 20  # 50 ms
    level, change = block_rms(x, block), block_rms(np.diff(x), block)
    ref_level, ref_change = np.median(level), np.median(change)
    steps = np.abs(np.diff(x))
    for start in (2, 4, 6):
        seam = slice(start * 20 - 2, (start + 1) * 20 + 2)  # the cross-fade +- 100 ms
        assert np.all(np.abs(level[seam] / ref_level - 1) < 0.15)  # no dip, no bump
        assert np.all(np.abs(change[seam] / ref_change - 1) < 0.15)
        for edge in (start * SR, (start + 1) * SR):  # no step at either end of the cross-fade
            assert steps[edge - 2: edge + 2].max() <= np.quantile(steps, 0.999)


def test_continuation_keeps_the_first_window(tiny):
    """A longer film continues the music rather than re-rolling it: up to the first seam the
    9 s track is the 3 s one (the 10 Hz DC filter's tail aside)."""
    short = compose(tiny, 3.0, window_s=3.0, overlap_s=1.0)
    long = compose(tiny, 9.0, window_s=3.0, overlap_s=1.0)
    np.testing.assert_allclose(long[:, : int(1.5 * SR)], short[:, : int(1.5 * SR)], atol=1e-4)
    assert not np.allclose(long[:, int(2.5 * SR): 3 * SR], short[:, int(2.5 * SR): 3 * SR])


def test_finished_track_meets_loudness_targets(tiny, tmp_path):
    """What compose_soundtrack does with it: fade, normalise, write; ffmpeg measures the file."""
    from engines.media import audio

    track = compose(tiny, 7.3, window_s=3.0, overlap_s=1.0)
    track = audio.normalise(audio.fade(track, SR, 1.0, 2.0), SR, target_lufs=-16.0,
                            true_peak_db=-1.0)
    path = audio.write_wav(tmp_path / "soundtrack.wav", track, SR)
    loud, peak = audio.measure_loudness(path)
    assert abs(loud + 16.0) <= 1.0 and peak <= -1.0
    assert track.shape == (1, round(7.3 * SR))


def test_compose_rejects_bad_requests(tiny, tmp_path):
    with pytest.raises(ConfigError, match="soundtrack.window_s"):
        compose(tiny, 2.0, window_s=31.0)
    with pytest.raises(ConfigError, match="soundtrack.overlap_s"):
        compose(tiny, 2.0, window_s=3.0, overlap_s=3.0)
    with pytest.raises(ConfigError, match="duration_s"):
        compose(tiny, 0.0)
    import soundfile as sf

    sf.write(tmp_path / "tune.wav", np.zeros(SR, np.float32), SR)
    with pytest.raises(ConfigError, match="soundtrack.model.*melody model"):
        compose(tiny, 2.0, melody=tmp_path / "tune.wav")


# --- loading safety ------------------------------------------------------------------------

class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_that_runs_code_is_refused(tiny, tmp_path):
    import shutil

    import torch

    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    ex = Exploit()
    ex.marker = str(tmp_path / "pwned")
    pkg = torch.load(tiny / "state_dict.bin", weights_only=True)
    torch.save({**pkg, "extra": ex}, bad / "state_dict.bin", pickle_module=pickle)
    with pytest.raises(UnsafeCheckpointError, match="state_dict.bin.*Unsupported global"):
        audiocraft.load(TINY, bad, "cpu")
    assert not (tmp_path / "pwned").exists()
    (bad / "compression_state_dict.bin").unlink()
    with pytest.raises(MissingWeightsError, match="compression_state_dict.bin"):
        audiocraft.load(TINY, bad, "cpu")


# --- settings and registry -----------------------------------------------------------------

def compose_group(option: str, *overrides: str) -> dict:
    """conf/soundtrack/<option>.yaml as Hydra composes it (its defaults list included)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(SOUNDTRACK), version_base=None):
        cfg = hydra_compose(config_name=option, overrides=list(overrides))
    return OmegaConf.to_container(cfg)


@pytest.mark.parametrize("option,overrides,source", [
    ("none", (), "none"), ("musicgen", (), "musicgen"), ("smoke", (), "musicgen"),
    ("musicgen_melody", ("melody=/music/tune.wav",), "musicgen_melody"),
    ("file", ("file=/music/track.mp3",), "file")])
def test_settings_presets_validate(option, overrides, source):
    settings = musicgen.SoundtrackSettings(**compose_group(option, *overrides))
    assert settings.source == source and settings.name == option
    if source.startswith("musicgen"):
        assert (SOUNDTRACK / "models" / f"{settings.model}.yaml").is_file()


def test_settings_errors():
    with pytest.raises(ValidationError, match="needs `melody:`"):
        musicgen.SoundtrackSettings(**compose_group("musicgen_melody"))
    with pytest.raises(ValidationError, match="needs `file:`"):
        musicgen.SoundtrackSettings(source="file")
    with pytest.raises(ValidationError, match="overlap_s"):
        musicgen.SoundtrackSettings(source="musicgen", window_s=10, overlap_s=10)
    with pytest.raises(ValidationError, match="extra"):
        musicgen.SoundtrackSettings(source="none", promt="typo")
    s = musicgen.SoundtrackSettings(source="none")
    with pytest.raises(ValidationError):
        s.source = "file"  # frozen


def test_registry_entries():
    names = sorted(p.stem for p in (SOUNDTRACK / "models").glob("*.yaml"))
    assert names == ["generated_musicgen_tiny", "musicgen_large", "musicgen_medium",
                     "musicgen_melody", "musicgen_small"]
    for name in names:
        e = yaml.safe_load((SOUNDTRACK / "models" / f"{name}.yaml").read_text())
        assert set(e) == {"name", "kind", "source", "files", "loader", "arch", "seed", "notes"}
        assert e["name"] == name and e["kind"] == "musicgen" and e["loader"] is None
        if e["source"] == "generated":
            assert e["files"] == [] and isinstance(e["seed"], int)
            audiocraft.generated_cfg(e["arch"])  # every arch key is understood
            continue
        assert e["source"] == "audiocraft"
        hub = e["arch"]["hub_id"]
        assert hub == "facebook/" + name.replace("_", "-")
        assert [f["name"] for f in e["files"]] == ["state_dict.bin", "compression_state_dict.bin"]
        for f in e["files"]:
            assert f["url"] == f"https://huggingface.co/{hub}/resolve/main/{f['name']}"
        assert e["arch"]["melody"] == (name == "musicgen_melody")


# --- prompts -------------------------------------------------------------------------------

def test_derive_prompt_is_deterministic_and_documented():
    prompts = ["Garden full of flowers and plants in Paul Klee style:1",
               "a garden at noon, trending on artstation, 4k", "A garden at noon", "", "rain:0.5"]
    assert musicgen.derive_prompt(prompts, None) == (
        "cinematic instrumental film score evoking: Garden full of flowers and plants in Paul "
        "Klee style; a garden at noon; rain")
    assert musicgen.derive_prompt(prompts, "calm").startswith("calm instrumental film score")
    assert musicgen.derive_prompt([], "dark") == "dark instrumental film score"
    long = musicgen.derive_prompt([f"scene number {i} " * 3 for i in range(40)], None)
    assert len(long) == 271 and long.endswith("; scene number 4 scene number 4 scene number 4")


def test_text_encoder_offline_and_missing_names_what_to_fetch(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from engines.core.errors import MissingWeightsError
    from engines.models.audiocraft import ensure_text_encoder

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match=r"text encoder t5-base .*make fetch-models"):
        ensure_text_encoder("t5-base", download=False)


def test_text_encoder_download_goes_online_only_for_its_files(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    from engines.models.audiocraft import TEXT_ENCODER_FILES, ensure_text_encoder

    calls = []

    def fake(repo, *, allow_patterns, local_files_only=False):
        calls.append((repo, tuple(allow_patterns), local_files_only, constants.HF_HUB_OFFLINE))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return str(tmp_path)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    ensure_text_encoder("t5-base", download=True)
    files = tuple(TEXT_ENCODER_FILES)
    assert calls == [("t5-base", files, True, True), ("t5-base", files, False, False)]
    assert constants.HF_HUB_OFFLINE is True  # offline again for everything else
