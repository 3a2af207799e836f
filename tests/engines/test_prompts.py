"""Prompt lines, image prompts, story phrases, prompt schedules and the 001 paper's weights."""

from __future__ import annotations

import math
import re

import pytest

from engines.core.errors import ConfigError
from engines.planning.prompts import (
    Prompt,
    paper_prompt_weights,
    parse_image_prompt,
    parse_prompt_schedule,
    parse_prompts,
    parse_story,
    story_index,
    story_phrases,
)

INF = math.inf


@pytest.mark.parametrize(("text", "want"), [
    ("a koala", (Prompt("a koala"),)),
    ("  a koala  :  2 ", (Prompt("a koala", 2.0),)),
    ("a | b:0.5 | blurry:-1", (Prompt("a"), Prompt("b", 0.5), Prompt("blurry", -1.0))),
    ("cat:0", (Prompt("cat", 0.0),)),
    ("cat:1.5:0.8", (Prompt("cat", 1.5, 0.8),)),
    ("cat:-.5:-1e-2", (Prompt("cat", -0.5, -0.01),)),
    ("a photo: dusk:1.5", (Prompt("a photo: dusk", 1.5),)),
    ("a photo: dusk", (Prompt("a photo: dusk"),)),
    ("cat:abc", (Prompt("cat:abc"),)),
    ("cat:abc:2", (Prompt("cat:abc", 2.0),)),
    ("at 10:30:1:-inf", (Prompt("at 10:30", 1.0),)),
    ("at 10:30:1", (Prompt("at 10", 30.0, 1.0),)),
    ("at 10:30", (Prompt("at 10", 30.0),)),  # documented: trailing numbers are the weight
    ("0.5", (Prompt("0.5"),)),
    ("", ()),
    ("   ", ()),
])
def test_parse_prompts(text: str, want: tuple[Prompt, ...]) -> None:
    assert parse_prompts(text, key="p") == want


@pytest.mark.parametrize(("text", "why"), [
    ("cat:", "'' after ':' is not a decimal number"),
    ("cat:1.2.3", "'1.2.3' after ':'"),
    ("cat:1e", "'1e' after ':'"),
    ("cat:inf", "'inf' after ':'"),
    ("cat:nan", "'nan' after ':'"),
    ("cat:1:", "'' after ':'"),
    ("cat:1e999", "too large"),
    ("cat:-inf", "weight must be a finite number"),
    ("cat:1:+inf", "'+inf' after ':'"),
    (":1", "prompt text is empty"),
    ("a || b", "empty"),
    ("a |", "empty"),
])
def test_parse_prompts_errors(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_prompts(text, key="film.shots.0.prompts")
    msg = str(info.value)
    assert msg.startswith("film.shots.0.prompts: bad value") and why in msg
    assert "text[:weight[:stop]]" in msg


@pytest.mark.parametrize(("text", "want"), [
    ("init.png", ("init.png", 1.0, -INF)),
    ("init.png:0.5", ("init.png", 0.5, -INF)),
    ("C:\\img\\k.png:2:-1", ("C:\\img\\k.png", 2.0, -1.0)),
    ("C:\\img\\k.png", ("C:\\img\\k.png", 1.0, -INF)),
    ("https://host:8080/a.png:0.3", ("https://host:8080/a.png", 0.3, -INF)),
    ("https://host/a.png", ("https://host/a.png", 1.0, -INF)),
])
def test_parse_image_prompt(text: str, want: tuple[str, float, float]) -> None:
    assert parse_image_prompt(text, key="img") == want


@pytest.mark.parametrize("text", ["", "a.png:1.2.3", ":0.5", "a.png:"])
def test_parse_image_prompt_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="^img: .*path\\[:weight"):
        parse_image_prompt(text, key="img")


def test_story() -> None:
    assert story_phrases(" a forest ^a city ^ the sea") == ("a forest", "a city", "the sea")
    assert story_phrases("") == ()
    with pytest.raises(ConfigError, match="empty"):
        story_phrases("a ^ ^ b")
    assert [story_index(i, 10, 3) for i in (0, 9, 10, 19, 20, 29, 30, 500)] == \
        [0, 0, 1, 1, 2, 2, 2, 2]
    # nerdyrodent's -cpe loops: phrase (i // every) mod n
    assert [story_index(i, 10, 3, loop=True) for i in (0, 10, 20, 30, 45, 61)] == [0, 1, 2, 0, 1, 0]
    with pytest.raises(ConfigError):
        story_index(0, 0, 3)


# nerdyrodent's generate.py: `prompts.split("^")` into phrases first, then each phrase
# `.split("|")` into items, each `text:weight:stop` (weight 1, stop -inf by default).
@pytest.mark.parametrize(("text", "want"), [
    ("a sunflower|photo:-1 ^ a rose",
     ((Prompt("a sunflower"), Prompt("photo", -1.0)), (Prompt("a rose"),))),
    ("a:2 ^ b | c:0.5:0.9 ^ d:-0.25",
     ((Prompt("a", 2.0),), (Prompt("b"), Prompt("c", 0.5, 0.9)), (Prompt("d", -0.25),))),
    ("one phrase | two:3", ((Prompt("one phrase"), Prompt("two", 3.0)),)),
    ("a photo: dusk:1.5 ^ night", ((Prompt("a photo: dusk", 1.5),), (Prompt("night"),))),
])
def test_story_line_splits_phrases_first_then_weighted_items(text, want) -> None:
    assert parse_story(text, key="p") == want
    schedule = parse_prompt_schedule(text, key="p")
    assert schedule.stories == (want,) and schedule.prompts == (want[0],)
    assert schedule.has_story == (len(want) > 1)


@pytest.mark.parametrize(("text", "why"), [
    ("a ^ ^ b", "a phrase between '^' is empty"),
    ("a ^", "a phrase between '^' is empty"),
    ("^ a", "a phrase between '^' is empty"),
    ("a | ^ b", "an item between '|' is empty"),
    ("a:1.2.3 ^ b", "'1.2.3' after ':'"),
])
def test_story_line_errors(text, why) -> None:
    with pytest.raises(ConfigError, match=re.escape(why)):
        parse_story(text, key="film.shots.0.prompts")


def test_story_keyframes_refuse_a_crossfade_but_cut_between_stories() -> None:
    spec = {"0": "a | b:0.5 ^ c", "10": "d"}
    s = parse_prompt_schedule(spec, key="film.shots.0.prompts")
    assert s.story_at(3) == ((Prompt("a"), Prompt("b", 0.5)), (Prompt("c"),))
    assert s.story_at(10) == ((Prompt("d"),),)
    assert s.at(12, transition="crossfade", transition_frames=0) == (Prompt("d"),)  # 0 = a cut
    with pytest.raises(ConfigError, match="ambiguous") as info:
        s.at(12, transition="crossfade", transition_frames=4)
    assert str(info.value).startswith("film.shots.0.prompts: bad value 'a | b ^ c'")


def test_a_plain_prompt_line_refuses_story_marks() -> None:
    with pytest.raises(ConfigError, match="story phrases"):
        parse_prompts("a ^ b", key="p")


def test_schedule_plain_line_and_all_texts() -> None:
    s = parse_prompt_schedule("a | b:0.5", key="p", fps=8)
    assert s.keys == (0,) and s.at(100) == (Prompt("a"), Prompt("b", 0.5))
    s = parse_prompt_schedule({"30": "c | a", "0": "a | b:0.5"}, key="p", fps=8)
    assert s.keys == (0, 30)
    assert s.all_texts() == ("a", "b", "c")


def test_schedule_cut() -> None:
    s = parse_prompt_schedule({"10": "a", "20": "b"}, key="p", fps=8)
    assert [s.at(f)[0].text for f in (0, 9, 10, 19, 20, 99)] == ["a"] * 4 + ["b"] * 2


def test_schedule_seconds_and_int_keys() -> None:
    s = parse_prompt_schedule({"0s": "a", "2.5s": "b", 40: "c"}, key="p", fps=8)
    assert s.keys == (0, 20, 40)
    with pytest.raises(ConfigError, match="no fps"):
        parse_prompt_schedule({"1s": "a"}, key="p")


def test_crossfade_golden() -> None:
    s = parse_prompt_schedule({"0": "a | b:0.5", "10": "c:2"}, key="p", fps=8)

    def at(f: int) -> tuple[Prompt, ...]:
        return s.at(f, transition="crossfade", transition_frames=4)

    assert at(9) == at(10) == (Prompt("a"), Prompt("b", 0.5))  # frame k: 100% old
    assert at(11) == (Prompt("a", 0.75), Prompt("b", 0.375), Prompt("c", 0.5))
    assert at(12) == (Prompt("a", 0.5), Prompt("b", 0.25), Prompt("c", 1.0))
    assert at(14) == at(30) == (Prompt("c", 2.0),)  # frame k+N: 100% new
    assert s.at(12, transition="crossfade", transition_frames=0) == (Prompt("c", 2.0),)


def test_crossfade_merges_shared_prompts_and_shortens_to_next_key() -> None:
    s = parse_prompt_schedule({"0": "a | b", "4": "a | c", "6": "d"}, key="p", fps=8)
    assert s.at(5, transition="crossfade", transition_frames=10) == \
        (Prompt("a", 1.0), Prompt("b", 0.5), Prompt("c", 0.5))  # fade shortened to 2 frames
    assert s.at(6, transition="crossfade", transition_frames=10) == (Prompt("a"), Prompt("c"))
    assert s.at(8, transition="crossfade", transition_frames=10) == \
        (Prompt("a", 0.8), Prompt("c", 0.8), Prompt("d", 0.2))


def test_missing_key_zero_holds_first() -> None:
    s = parse_prompt_schedule({"5": "a", "9": "b"}, key="p", fps=8)
    assert s.at(0, transition="crossfade", transition_frames=3) == (Prompt("a"),)
    assert s.at(6, transition="crossfade", transition_frames=3) == (Prompt("a"),)


@pytest.mark.parametrize(("spec", "why"), [
    ({}, "no keyframes"),
    ({"x": "a"}, "not a number"),
    ({"-1": "a"}, "negative"),
    ({"1.5": "a"}, "write '1.5s'"),
    ({"0": "a", "0s": "b"}, "both fall on frame 0"),
    ({"0": "cat:1.2.3"}, "p.0: bad value"),
    ({"0": 3}, "must be a string"),
    ({True: "a"}, "not a number"),
    (["a"], "no keyframes"),
])
def test_schedule_errors(spec: object, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_prompt_schedule(spec, key="p", fps=8)  # type: ignore[arg-type]
    assert str(info.value).startswith("p") and why in str(info.value)


def test_at_argument_errors() -> None:
    s = parse_prompt_schedule("a", key="p", fps=8)
    with pytest.raises(ConfigError, match="crossfade"):
        s.at(0, transition="dissolve")
    with pytest.raises(ConfigError, match="whole number"):
        s.at(0, transition="crossfade", transition_frames=-1)


def test_paper_prompt_weights_golden() -> None:
    # 3 prompts, F = 4: frame 0 only the first prompt (the paper: "for the first frame, only
    # the first prompt is used"), then linear hand-over; the last prompt holds from frame 8.
    got = [paper_prompt_weights(3, 4, f) for f in range(11)]
    assert got == [
        [1.0, 0.0, 0.0], [0.75, 0.25, 0.0], [0.5, 0.5, 0.0], [0.25, 0.75, 0.0],
        [0.0, 1.0, 0.0], [0.0, 0.75, 0.25], [0.0, 0.5, 0.5], [0.0, 0.25, 0.75],
        [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0],
    ]
    assert paper_prompt_weights(1, 5, 3) == [1.0]
    assert all(sum(paper_prompt_weights(4, 7, f)) == pytest.approx(1) for f in range(40))
    with pytest.raises(ConfigError, match="frames_per_prompt"):
        paper_prompt_weights(2, 0, 0)


def test_paper_prompt_weights_fade_over_two_f_frames() -> None:
    # The authors' code: with frames_per_prompt F, prompt i fades into prompt i+1 over a block
    # of 2F frames, w_next = k / 2F at frame k of the block; the last prompt then holds for F
    # frames: 2 prompts, F = 20 -> a 60-frame video (the paper's Figure 2). Frame 10: 10/40.
    got = [paper_prompt_weights(2, 20, f, fade=40) for f in (0, 10, 20, 39, 40, 59)]
    assert got == [[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [1 - 39 / 40, 39 / 40], [0.0, 1.0],
                   [0.0, 1.0]]
