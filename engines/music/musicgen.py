"""Soundtrack engine: MusicGen (audiocraft) music that fits the cut to the sample.

`compose` writes nothing; it returns float32 audio of shape (channels, samples) with exactly
round(duration_s * sample_rate) samples. Up to `window_s` seconds come from one generation;
longer tracks are continued window by window: each new window is prompted with the last
`overlap_s` seconds of the audio so far (audiocraft's `generate_continuation`, or its chroma
equivalent for melody models) and the two renderings of the overlap are joined by an
equal-power cross-fade (see `engines.media.audio.crossfade`), so a seam is never an audible restart.

The model is a prepared registry entry (pre-production's select_models), loaded through
engines/models/loaded.py from audiocraft's published layout (engines/models/audiocraft.py).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.core.errors import ConfigError

NAME = "musicgen"
CODE_VERSION = "1"  # bump when compose's output for the same inputs would change
log = logging.getLogger(__name__)


class SoundtrackSettings(BaseModel):
    """The `soundtrack:` config group (conf/soundtrack/*.yaml). Times in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"  # the preset's name (= its file name); informational
    source: Literal["musicgen", "musicgen_melody", "file", "none"] = "none"
    model: str = "musicgen_small"  # registry name under conf/soundtrack/models/
    prompt: str | None = None  # music description; None = derived from the film's prompts
    mood: str | None = None  # leading words of a derived prompt, e.g. "calm"; None = "cinematic"
    melody: str | None = None  # audio file whose melody (chroma) guides musicgen_melody
    file: str | None = None  # the user's own track, for source: file
    fade_in_s: float = Field(1.0, ge=0)
    fade_out_s: float = Field(2.0, ge=0)
    target_lufs: float = Field(-16.0, ge=-70, le=0)  # integrated loudness, LUFS
    true_peak_db: float = Field(-1.0, le=0)  # true-peak ceiling, dBTP
    window_s: float = Field(30.0, gt=1, le=30)  # one generation (MusicGen's limit is 30 s)
    overlap_s: float = Field(10.0, gt=0)  # context carried into the next window
    loop_crossfade_s: float = Field(0.5, ge=0)  # cross-fade at each loop point of a short file
    seed: int | None = Field(None, ge=0)  # None = the film's seed
    temperature: float = Field(1.0, gt=0)  # sampling temperature
    top_k: int = Field(250, ge=0)  # sample from the k likeliest tokens (0 = all)
    cfg_coef: float = Field(3.0, ge=0)  # classifier-free guidance strength

    @model_validator(mode="after")
    def _consistent(self) -> SoundtrackSettings:
        if self.overlap_s >= self.window_s:
            raise ValueError(f"overlap_s ({self.overlap_s}) must be shorter than window_s "
                             f"({self.window_s})")
        if self.source == "file" and not self.file:
            raise ValueError("source: file needs `file:` (path to an audio file)")
        if self.source == "musicgen_melody" and not self.melody:
            raise ValueError("source: musicgen_melody needs `melody:` (path to an audio file)")
        return self


# --- prompts -------------------------------------------------------------------------------

_VISUAL_ONLY = re.compile(
    r"\b(trending on artstation|artstation|unreal engine|octane render|highly detailed|"
    r"ultra detailed|photorealistic|hyperrealistic|[48]k|hd|hdr|wallpaper|sharp focus|"
    r"depth of field|bokeh)\b", re.I)


def derive_prompt(visual_prompts: list[str], mood: str | None = None, max_chars: int = 300) -> str:
    """A music prompt from the film's visual prompts (deterministic).

    Each prompt loses any `:weight[:stop]` suffix and the render-quality tags that say nothing
    about music (artstation, unreal engine, 4k...); duplicates (case-insensitive) and empties go;
    the rest, in order, are joined with "; " after "<mood> instrumental film score evoking: "
    (mood defaults to "cinematic") and cut at a whole phrase to `max_chars`. Pass only the
    prompts with positive weight: a negative prompt ("blurry") would be evoked too.
    """
    head = f"{(mood or 'cinematic').strip()} instrumental film score"
    seen, parts = set(), []
    for text in visual_prompts:
        t = re.sub(r"(:-?\d+(\.\d*)?)+\s*$", "", text.strip())
        t = _VISUAL_ONLY.sub("", t)
        t = re.sub(r"\s*,(\s*,)+", ",", re.sub(r"\s+", " ", t)).strip(" ,;|")
        if t and t.lower() not in seen:
            seen.add(t.lower())
            parts.append(t)
    if not parts:
        return head
    out = f"{head} evoking: {parts[0]}"[:max_chars]
    for p in parts[1:]:
        if len(out) + 2 + len(p) > max_chars:
            break
        out += f"; {p}"
    return out


# --- composing -----------------------------------------------------------------------------

def _set_length(model: Any, tokens: int, **params: Any) -> None:
    """Ask audiocraft for exactly `tokens` frames (it computes int(duration * frame_rate))."""
    fr = model.frame_rate
    duration = tokens / fr
    while int(duration * fr) < tokens:
        duration = math.nextafter(duration, math.inf)
    model.set_generation_params(duration=duration, extend_stride=model.max_duration / 2,
                                **params)


def _generate(model: Any, text: str | None, prompt: Any, melody: Any) -> Any:
    """One window: (channels, samples) tensor. prompt/melody: (channels, samples) or None."""
    sr = model.sample_rate
    if melody is None:
        if prompt is None:
            return model.generate([text])[0]
        return model.generate_continuation(prompt[None], sr, [text])[0]
    if prompt is None:
        return model.generate_with_chroma([text], melody[None], sr)[0]
    # audiocraft has no public "continuation + chroma" call; this is what its generate_* do
    attrs, tokens = model._prepare_tokens_and_attributes([text], prompt[None], [melody])
    return model.generate_audio(model._generate_tokens(attrs, tokens))[0]


def _melody_window(melody: Any, start: int, length: int) -> Any:
    """`length` samples of the melody from `start`, repeating it if it is shorter (as
    audiocraft does for long generations)."""
    import torch

    idx = torch.arange(start, start + length) % melody.shape[-1]
    return melody[..., idx]


def compose(entry: Any, model_dir: Path, *, prompt: str, duration_s: float, seed: int,
            melody: Path | None = None, window_s: float = 30.0, overlap_s: float = 10.0,
            device: str = "cpu", temperature: float = 1.0, top_k: int = 250,
            cfg_coef: float = 3.0) -> tuple[np.ndarray, int]:
    """Music for `prompt`, exactly round(duration_s * sr) samples long.

    Returns (float32 array of shape (channels, samples), sample rate in Hz). Every random draw
    comes from torch's generator seeded with `seed` (the caller's RNG state is restored after),
    so the same inputs give the same samples on the same device (byte-identical on CPU).
    The result is DC-free (`engines.media.audio.remove_dc`, 10 Hz high-pass); fades and loudness are
    left to `engines.media.audio.fade` / `normalise`.
    """
    import torch

    from engines.media import audio
    from engines.models import loaded

    if not duration_s > 0:
        raise ConfigError("duration_s", duration_s, "a positive duration in seconds")
    model = loaded.load(entry, model_dir, device)
    sr, fr = model.sample_rate, model.frame_rate
    if window_s > model.max_duration:
        raise ConfigError("soundtrack.window_s", window_s,
                          f"at most {model.max_duration} s (this model's longest generation)")
    if not 0 < overlap_s < window_s:
        raise ConfigError("soundtrack.overlap_s", overlap_s, f"0 < overlap_s < window_s "
                          f"({window_s})")
    melody_t = None
    if melody is not None:
        if "self_wav" not in model.lm.condition_provider.conditioners:
            raise ConfigError("soundtrack.model", Path(model_dir).name,
                              "a melody model (musicgen_melody) when a melody is given")
        wav, _ = audio.read_audio(melody, sr, key="soundtrack.melody")
        melody_t = torch.from_numpy(wav.mean(axis=0, keepdims=True)).to(model.device)
    n = round(duration_s * sr)
    hop = sr // fr
    need_tok = -(-n // hop)
    win_tok = int(window_s * fr)
    ovl_tok = max(1, round(overlap_s * fr))
    if ovl_tok >= win_tok:
        raise ConfigError("soundtrack.overlap_s", overlap_s, f"shorter than window_s ({window_s})")
    windows = 1 + max(0, -(-(need_tok - win_tok) // (win_tok - ovl_tok)))
    text = prompt.strip() or None
    params = {"temperature": temperature, "top_k": min(top_k, model.lm.card), "cfg_coef": cfg_coef}
    cuda = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(int(seed))
        first = min(need_tok, win_tok)
        _set_length(model, first, **params)
        melody_w = None if melody_t is None else _melody_window(melody_t, 0, first * hop)
        log.info("soundtrack: window 1/%d (%.1f s)", windows, first / fr)
        out = _generate(model, text, None, melody_w).float().cpu().numpy()
        index = 1
        while out.shape[-1] < n:
            index += 1
            new_tok = min(win_tok - ovl_tok, -(-(n - out.shape[-1]) // hop))
            start = out.shape[-1] - ovl_tok * hop
            _set_length(model, ovl_tok + new_tok, **params)
            prompt_t = torch.from_numpy(out[:, start:]).to(model.device)
            melody_w = (None if melody_t is None
                        else _melody_window(melody_t, start, (ovl_tok + new_tok) * hop))
            log.info("soundtrack: window %d/%d (%.1f s after %.1f s of context)", index, windows,
                     new_tok / fr, ovl_tok / fr)
            nxt = _generate(model, text, prompt_t, melody_w).float().cpu().numpy()
            if nxt.shape[-1] <= ovl_tok * hop:
                raise RuntimeError(f"MusicGen returned {nxt.shape[-1]} samples for "
                                   f"{ovl_tok + new_tok} frames")
            seam = audio.crossfade(out[:, start:], nxt[:, : ovl_tok * hop])
            out = np.concatenate([out[:, :start], seam, nxt[:, ovl_tok * hop:]], axis=1)
    if out.shape[-1] < n:  # a decoder that returns fewer samples than frames * hop
        out = np.pad(out, ((0, 0), (0, n - out.shape[-1])))
    return np.ascontiguousarray(audio.remove_dc(out[:, :n], sr), dtype=np.float32), int(sr)
