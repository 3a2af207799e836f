"""The ffmpeg runner and prober: argv shape, error messages, filter escaping, probe fields."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
import soundfile as sf

from engines.core.errors import PromptreelError
from engines.media.ffmpeg import (
    GLOBAL_ARGS,
    OUTPUT_BITEXACT,
    MediaInfo,
    argv,
    escape_filter_text,
    ffmpeg_exe,
    probe,
    run,
    run_argv,
)

NASTY = "a %{pts} : , ; [x] 'q' \\ b=c\u00e9 %%"


def lavfi_video(path: Path, *, rate: str = "24", seconds: float = 1.0, audio: bool = False,
                codec: str = "libx264") -> Path:
    src = ffmpeg.input(f"testsrc2=size=64x48:rate={rate}:duration={seconds}", f="lavfi").video
    streams = [src.filter("format", "yuv420p")]
    if audio:
        streams.append(ffmpeg.input(f"sine=frequency=440:sample_rate=48000:duration={seconds}",
                                    f="lavfi").audio)
    run(ffmpeg.output(*streams, str(path), vcodec=codec, **OUTPUT_BITEXACT), what="test input")
    return path


def test_argv_is_a_list_with_global_options_first(tmp_path: Path) -> None:
    out = ffmpeg.output(ffmpeg.input("in.png"), str(tmp_path / "o.png"))
    args = argv(out)
    assert args[0] == ffmpeg_exe() and Path(args[0]).is_file()
    assert tuple(args[1:1 + len(GLOBAL_ARGS)]) == GLOBAL_ARGS
    assert "-nostdin" in args and "-y" in args and all(isinstance(a, str) for a in args)


def test_failure_names_the_step_and_quotes_stderr(tmp_path: Path) -> None:
    out = ffmpeg.output(ffmpeg.input(str(tmp_path / "missing.mkv")), str(tmp_path / "o.mkv"))
    with pytest.raises(PromptreelError) as err:
        run(out, what="blending the garden shots")
    msg = str(err.value)
    assert "blending the garden shots" in msg and "missing.mkv" in msg
    assert "No such file or directory" in msg
    with pytest.raises(PromptreelError, match="longer than 0.01 s"):
        run_argv([ffmpeg_exe(), "-f", "lavfi", "-i", "testsrc2=duration=60", "-f", "null", "-"],
                 what="a long job", timeout=0.01)


def test_escape_filter_text_round_trips_through_a_filter_graph(tmp_path: Path) -> None:
    target = tmp_path / "dir, with; [odd] 'chars'" / "meta.txt"
    target.parent.mkdir()
    graph = (f"metadata=mode=add:key=k:value={escape_filter_text(NASTY)},"
             f"metadata=mode=print:file={escape_filter_text(str(target))}")
    run_argv([ffmpeg_exe(), *GLOBAL_ARGS, "-f", "lavfi", "-i", "color=c=red:s=16x16:d=0.04",
              "-vf", graph, "-f", "null", "-"], what="escaping test")
    assert f"k={NASTY}\n" in target.read_text(encoding="utf-8")


def test_probe_reports_what_a_player_sees(tmp_path: Path) -> None:
    info = probe(lavfi_video(tmp_path / "v.mp4", rate="30000/1001", seconds=2, audio=True))
    assert isinstance(info, MediaInfo)
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 64, 48)
    assert info.fps == Fraction(30000, 1001) and info.frames == 60
    assert info.duration == pytest.approx(60 * 1001 / 30000, abs=1e-3)
    assert info.audio is not None and info.audio.sample_rate == 48000
    assert info.audio.codec == "aac" and info.audio.channels == 1
    assert abs(info.audio.duration - 2.0) < 0.03
    assert probe(lavfi_video(tmp_path / "silent.mkv", codec="ffv1")).audio is None


def test_probe_refuses_non_video(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(4800), 48000)
    with pytest.raises(PromptreelError, match="no video stream"):
        probe(wav)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(PromptreelError, match="cannot read video"):
        probe(junk)
