"""Prompt text, story phrases and prompt schedules (pure Python).

Prompt line: items `text[:weight[:stop]]` joined by `|`, e.g. `"a koala | blurry:-0.5"`.
Whitespace around items and fields is trimmed. Weights and stops are plain decimal numbers
(negative and 0 allowed; default weight 1, stop -inf = never stop). Only *trailing* numeric
fields are weight and stop, so the text may contain ':' (`"a photo: dusk:1.5"` is the text
`"a photo: dusk"` at weight 1.5, and `"a photo: dusk"` is that text at weight 1). A trailing field
that is not a number at all is part of the text (`"cat:abc"` is the text `"cat:abc"`); one that
looks like a broken number (`"cat:"`, `"cat:1.2.3"`, `"cat:1e"`, `"cat:inf"`) is a ConfigError.
A stop may be written `-inf` (the default: never stop). A text ending in `:<number>` (a time,
`"at 10:30"`) needs both fields spelt out: `"at 10:30:1:-inf"`.
An empty line means no text prompts (`()`); an empty item (`"a || b"`, `"a |"`) is an error.

Image prompts use the same form, `path[:weight[:stop]]`; the path may contain ':' (URLs, `C:\\`).

Story line (nerdyrodent's `generate.py` precedence): the line is split on `^` first into
phrases, then each phrase on `|` into weighted prompts, so `"a sunflower|photo:-1 ^ a rose"` is
two phrases: ("a sunflower" 1, "photo" -1), then ("a rose" 1). Each phrase needs at least one
item (`"a ^ ^ b"`, `"a ^"` are errors). An engine with a story mode switches phrases every N
iterations (`story_index`); elsewhere a story line is refused (flows/checks.py), as is a story
line in a schedule whose keyframes cross-fade (`PromptSchedule.at`): which phrase of which
keyframe would blend is ambiguous.

Prompt schedule: keyframes `{"0": "a | b:0.5", "30": "c"}` (frames) or `{"0s": .., "2.5s": ..}`
(seconds, rounded to the nearest frame at the given fps), or a plain line (one keyframe at 0).
Before the first key, the first keyframe's prompts hold. Transitions (`PromptSchedule.at`):
- `cut`: a keyframe's prompts hold from its frame until the next key.
- `crossfade` over N frames STARTING at a key k: frame k is 100% the previous keyframe's
  prompts, frame k+N 100% the new one's; in between the old weights scale by 1-a and the new by a,
  with a = (f-k)/N. A fade is shortened to end at the next key if that comes sooner. Prompts with
  the same text and stop in both keyframes are merged (their weights add).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

from engines.core.errors import ConfigError
from engines.planning.keyframes import key_to_frame

_NUM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NUMISH = re.compile(r"[+-]?[\d.]*(?:[eE][+-]?[\d.]*)?")
_KEY = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))\s*(s?)")
PROMPT_FORM = ("'text[:weight[:stop]]' items joined by '|'; weight a decimal number, stop a decimal "
               "number or -inf")
IMAGE_FORM = "'path[:weight[:stop]]'; weight a decimal number, stop a decimal number or -inf"
SCHEDULE_FORM = ("a prompt line, or keyframes {'0': 'prompt', '30': 'prompt'} with keys whole "
                 "frames >= 0 or seconds like '2.5s'")


STORY_FORM = ("phrases separated by '^', each phrase 'text[:weight[:stop]]' items joined by "
              "'|'")


@dataclass(frozen=True)
class Prompt:
    """A weighted text prompt. `stop`: the loss threshold below which it stops pulling."""

    text: str
    weight: float = 1.0
    stop: float = -math.inf


def _looks_numeric(field: str) -> bool:
    """True for fields meant as a number but malformed: '', '1.2.3', '1e', 'inf', 'nan'."""
    low = field.lower().lstrip("+-")
    return (field == "" or low in ("inf", "infinity", "nan")
            or (_NUMISH.fullmatch(field) is not None and any(c in "0123456789." for c in field)))


def _split_weighted(item: str, *, key: str, form: str, what: str) -> tuple[str, float, float]:
    """(text, weight, stop) from 'text[:weight[:stop]]', taking only trailing numeric fields."""
    parts, nums = item.split(":"), []
    while len(parts) > 1 and len(nums) < 2:
        tail = parts[-1].strip()
        if _NUM.fullmatch(tail) or tail.lower() == "-inf":
            value = float(tail)
            if math.isinf(value) and tail.lower() != "-inf":
                raise ConfigError(key, item, form, f"{tail!r} is too large")
            nums.insert(0, value)
            parts.pop()
        elif _looks_numeric(tail):
            raise ConfigError(key, item, form, f"{tail!r} after ':' is not a decimal number")
        else:
            break
    text = ":".join(parts).strip()
    if not text:
        raise ConfigError(key, item, form, f"the {what} is empty")
    weight = nums[0] if nums else 1.0
    if not math.isfinite(weight):
        raise ConfigError(key, item, form, "the weight must be a finite number")
    stop = nums[1] if len(nums) > 1 else -math.inf
    return text, weight, stop


Phrase = tuple[Prompt, ...]  # the weighted prompts of one story phrase (or of a plain line)


def parse_prompts(text: str, *, key: str) -> Phrase:
    """Prompts of one phrase `"a:1 | b:-0.5:0.8"`; `()` for an empty line. A line with story
    phrases (`^`) is `parse_story`'s: here it is an error."""
    if not isinstance(text, str):
        raise ConfigError(key, text, PROMPT_FORM, "a prompt line must be a string")
    if not text.strip():
        return ()
    if "^" in text:
        raise ConfigError(key, text, PROMPT_FORM, "'^' separates story phrases, which are not "
                          "accepted here")
    out = []
    for item in text.split("|"):
        if not item.strip():
            raise ConfigError(key, text, PROMPT_FORM, "an item between '|' is empty")
        out.append(Prompt(*_split_weighted(item.strip(), key=key, form=PROMPT_FORM,
                                           what="prompt text")))
    return tuple(out)


def parse_image_prompt(text: str, *, key: str) -> tuple[str, float, float]:
    """(path, weight, stop) of an image prompt 'path[:weight[:stop]]'."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, text, IMAGE_FORM, "the image path is empty")
    return _split_weighted(text.strip(), key=key, form=IMAGE_FORM, what="image path")


def story_phrases(text: str, *, key: str = "prompts") -> tuple[str, ...]:
    """Phrases of a story line `"a forest ^ a city"`, trimmed; `()` for an empty line."""
    if not text.strip():
        return ()
    phrases = tuple(p.strip() for p in text.split("^"))
    if not all(phrases):
        raise ConfigError(key, text, STORY_FORM, "a phrase between '^' is empty")
    return phrases


def parse_story(text: str, *, key: str) -> tuple[Phrase, ...]:
    """The phrases of a line, each its weighted prompts: split on `^` first, then each phrase on
    `|` (nerdyrodent's order). A line without `^` is one phrase; an empty line is `((),)`."""
    if not isinstance(text, str):
        raise ConfigError(key, text, PROMPT_FORM, "a prompt line must be a string")
    if "^" not in text:
        return (parse_prompts(text, key=key),)
    return tuple(parse_prompts(phrase, key=key) for phrase in story_phrases(text, key=key))


def story_index(iteration: int, every: int, n_phrases: int, *, loop: bool = False) -> int:
    """Index of the story phrase active at `iteration` (from 0) when phrases switch every
    `every` iterations: iteration // every, then holding on the last phrase once all have shown,
    or with `loop` starting again from the first (nerdyrodent's `-cpe`)."""
    if every < 1:
        raise ConfigError("story.every", every, "a whole number of iterations >= 1")
    if n_phrases < 1 or iteration < 0:
        raise ValueError(f"need n_phrases >= 1 and iteration >= 0, got {n_phrases}, {iteration}")
    i = iteration // every
    return i % n_phrases if loop else min(i, n_phrases - 1)


def _blend(old: tuple[Prompt, ...], new: tuple[Prompt, ...], a: float) -> tuple[Prompt, ...]:
    """Old weights times 1-a, new times a; same (text, stop) merged, old order first."""
    merged: dict[tuple[str, float], float] = {}
    for prompts, scale in ((old, 1 - a), (new, a)):
        for p in prompts:
            merged[(p.text, p.stop)] = merged.get((p.text, p.stop), 0.0) + p.weight * scale
    return tuple(Prompt(text, w, stop) for (text, stop), w in merged.items())


@dataclass(frozen=True)
class PromptSchedule:
    """Keyframes: `keys` (frame indices, ascending) and the story of each keyframe (its phrases;
    one phrase unless its line has `^`)."""

    key: str
    keys: tuple[int, ...]
    stories: tuple[tuple[Phrase, ...], ...]

    @property
    def prompts(self) -> tuple[Phrase, ...]:
        """The first phrase of each keyframe (the whole line when it has no `^`)."""
        return tuple(story[0] for story in self.stories)

    @property
    def has_story(self) -> bool:
        """True if some keyframe's line has several phrases (`^`)."""
        return any(len(story) > 1 for story in self.stories)

    def index(self, frame: int) -> int:
        """The keyframe in force at `frame` (the first one before its key)."""
        if frame < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        return max(bisect_right(self.keys, frame) - 1, 0)

    def story_at(self, frame: int) -> tuple[Phrase, ...]:
        """The phrases in force at `frame` (cut: a keyframe's line holds until the next key)."""
        return self.stories[self.index(frame)]

    def at(self, frame: int, *, transition: str = "cut",
           transition_frames: int = 0) -> Phrase:
        """Prompts in force at `frame` (see the module docstring for the transitions)."""
        if transition not in ("cut", "crossfade"):
            raise ConfigError("transition.kind", transition, "'cut' or 'crossfade'")
        if isinstance(transition_frames, bool) or not isinstance(transition_frames, int) \
                or transition_frames < 0:
            raise ConfigError("transition.frames", transition_frames, "a whole number >= 0")
        i = self.index(frame)
        if transition == "cut" or i == 0:
            return self.prompts[i]
        n = transition_frames
        if i + 1 < len(self.keys):
            n = min(n, self.keys[i + 1] - self.keys[i])
        if n > 0:
            self.refuse_story_blend(transition)
        a = (frame - self.keys[i]) / n if n > 0 else 1.0
        if a >= 1:
            return self.prompts[i]
        if a <= 0:
            return self.prompts[i - 1]
        return _blend(self.prompts[i - 1], self.prompts[i], a)

    def refuse_story_blend(self, transition: str) -> None:
        """ConfigError if keyframes holding story phrases would be blended by `transition`."""
        if self.has_story and transition != "cut" and len(self.keys) > 1:
            line = next(" ^ ".join(" | ".join(p.text for p in ph) for ph in story)
                        for story in self.stories if len(story) > 1)
            raise ConfigError(self.key, line, "story phrases ('^') in keyframes joined by "
                              "transition.kind=cut", f"a {transition} between keyframes whose "
                              "lines are stories is ambiguous (which phrase blends with which?)")

    def all_texts(self) -> tuple[str, ...]:
        """Every prompt text, once each, in keyframe order (story phrases included)."""
        return tuple(dict.fromkeys(p.text for story in self.stories for ph in story for p in ph))


def parse_prompt_schedule(spec: str | Mapping[str, str], *, key: str,
                          fps: float | None = None) -> PromptSchedule:
    """Validate a prompt line or keyframe mapping; `fps` is needed only for seconds keys."""
    if isinstance(spec, str):
        return PromptSchedule(key, (0,), (parse_story(spec, key=key),))
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(key, spec, SCHEDULE_FORM, "no keyframes")
    by_frame: dict[int, tuple[str, tuple[Phrase, ...]]] = {}
    for raw, line in spec.items():
        label = str(raw).strip()
        m = _KEY.fullmatch(label) if isinstance(raw, str | int | float) and not isinstance(raw, bool) \
            else None
        if m is None:
            raise ConfigError(key, raw, SCHEDULE_FORM, f"keyframe key {raw!r} is not a number")
        try:
            frame = key_to_frame(m.group(1), m.group(2) == "s", fps, key=key, text=raw)
        except ConfigError as exc:  # name the prompt schedule's form, not a motion schedule's
            raise ConfigError(key, raw, SCHEDULE_FORM, exc.hint) from None
        if frame in by_frame:
            raise ConfigError(key, raw, SCHEDULE_FORM, f"keys {by_frame[frame][0]!r} and "
                              f"{label!r} both fall on frame {frame}")
        by_frame[frame] = (label, parse_story(line, key=f"{key}.{label}"))
    keys = tuple(sorted(by_frame))
    return PromptSchedule(key, keys, tuple(by_frame[k][1] for k in keys))


def paper_prompt_weights(n_prompts: int, frames_per_prompt: int, frame: int, *,
                         fade: int | None = None) -> list[float]:
    """Weights of each prompt at `frame` in the 001 paper's linear cross-fade.

    Prompt i owns the block of B frames from i*B (B = `fade`, default `frames_per_prompt`): at
    frame i*B + k, w[i] = 1 - k/B and w[i+1] = k/B; all others 0. From (n-1)*B the last prompt
    holds at 1. The authors' code (github.com/pschaldenbrand/Text2Video, text2video.py) uses
    B = 2F for a frames_per_prompt of F (a video of (n-1)*2F + F frames); B = F is promptreel's
    earlier reading of the paper's text.
    """
    if n_prompts < 1:
        raise ConfigError("prompts", n_prompts, "at least one prompt")
    if frames_per_prompt < 1:
        raise ConfigError("frames_per_prompt", frames_per_prompt, "a whole number >= 1")
    if frame < 0:
        raise ValueError(f"frame must be >= 0, got {frame}")
    block = frames_per_prompt if fade is None else fade
    if block < 1:
        raise ConfigError("frames_per_prompt", block, "a whole number >= 1")
    w = [0.0] * n_prompts
    i = frame // block
    if i >= n_prompts - 1:
        w[-1] = 1.0
        return w
    w[i + 1] = (frame % block) / block
    w[i] = 1.0 - w[i + 1]
    return w
