"""Production: music composition (the paper's Stage 2) with MusicGen, or a user's track.

The track is exactly the finished film's duration (planned in pre-production after speed
modulation and cross-fades), faded, loudness-normalised and written as a WAV at the model's rate.
Its key covers only the soundtrack settings, the resolved prompt, the duration and the seed, so
changing the frames but not the length reuses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines.models.registry import Prepared
from engines.music import musicgen
from engines.music.musicgen import SoundtrackSettings
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "compose_soundtrack"
CODE_VERSION = "1+" + musicgen.CODE_VERSION  # this task and the engine it runs


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def compose_soundtrack(*, settings: SoundtrackSettings, prompt: str | None, total_frames: int, fps: float,
                       seed: int, model: Prepared | None, input_sha256: str | None, runtime: Runtime) -> Artefact:
    def build(work: Path) -> dict[str, Any]:
        from engines.core.device import pick_device
        from engines.media import audio

        duration = total_frames / fps
        if settings.source == "file":
            track, sr = audio.fit_file(Path(settings.file), duration,
                                       crossfade_s=settings.loop_crossfade_s)
        else:
            melody = Path(settings.melody) if settings.source == "musicgen_melody" else None
            track, sr = musicgen.compose(model.entry, Path(model.folder), prompt=prompt or "", duration_s=duration,
                                         seed=seed, melody=melody, window_s=settings.window_s,
                                         overlap_s=settings.overlap_s,
                                         temperature=settings.temperature, top_k=settings.top_k,
                                         cfg_coef=settings.cfg_coef,
                                         device=pick_device(runtime.device))
        track = audio.fade(track, sr, settings.fade_in_s, settings.fade_out_s)
        track = audio.normalise(track, sr, target_lufs=settings.target_lufs,
                                true_peak_db=settings.true_peak_db)
        audio.write_wav(work / "soundtrack.wav", track, sr)
        return {"sample_rate": sr, "samples": int(track.shape[-1]), "duration_s": duration,
                "prompt": prompt, "source": settings.source}

    return run_cached(NAME, CODE_VERSION, locals(), build)
