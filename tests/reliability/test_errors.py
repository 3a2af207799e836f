"""docs/errors.md, row by row: every bad input stops before any heavy work with its documented
`error: ...` line (exit code 2, no traceback).

The table is parsed here, so rows and tests match one to one. Each row runs the checks the command
line runs, in this process (`cli_overrides` + `compose_config`: check_overrides, Hydra's
composition, the typed config, check_semantics); a few rows also run the real command line.
Placeholders: `{tmp}` is a folder of bad input files made by `make_inputs`, `{root}` the repo.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import pytest

from engines.core.errors import PromptreelError
from tests.helpers import ROOT, run_cli

DOC = ROOT / "docs" / "errors.md"
HEADER = "| id | command | match | message |"
CLI_ROWS = ("unknown-film", "misspelt-key", "init-image-text-file", "init-image-unicode-unquoted",
            "hostile-callbacks-key")


class Row(NamedTuple):
    id: str
    command: str
    match: str  # "exact": the whole stderr line; "prefix": the line starts with `message`
    message: str  # for "prefix", the text before a closing " …"


def _cell(text: str) -> str:
    """A table cell's text: outer code-span backticks off, `\\|` back to `|`."""
    text = text.strip()
    ticks = len(text) - len(text.lstrip("`"))
    if ticks:
        text = text[ticks:-ticks].strip()
    return text.replace("\\|", "|")


def table_rows(doc: Path = DOC) -> list[Row]:
    """The rows of the table under HEADER in docs/errors.md."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2  # header, then the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        assert len(cells) == 4, f"a row needs 4 cells: {line}"
        rows.append(Row(*(_cell(c) for c in cells)))
    return rows


ROWS = table_rows()
BY_ID = {r.id: r for r in ROWS}


def make_inputs(tmp: Path) -> Path:
    """The files the rows name: a text file called .png, a GIF, an empty and a truncated PNG, a
    folder called .png, a PNG whose header claims 100000x100000, an unreadable PNG, a text file
    called .mp4, a 5-frame video, ..."""
    import struct
    import zlib

    from PIL import Image

    tmp.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp / "ok image.png")
    Image.new("RGB", (8, 8)).save(tmp / "anim.gif")
    (tmp / "notes.png").write_text("shopping list: eggs, milk\n")
    (tmp / "notes.wav").write_text("not a sound\n")
    import numpy as np
    import soundfile as sf

    sf.write(tmp / "tune.wav", np.zeros(8000, dtype=np.float32), 16000)
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "truncated.png").write_bytes((tmp / "ok image.png").read_bytes()[:40])
    (tmp / "folder.png").mkdir(exist_ok=True)
    # a diffusers pipeline folder holding a pickled weight file (refused: only safetensors load)
    pickled = tmp / "pickled_pipeline"
    (pickled / "transformer").mkdir(parents=True, exist_ok=True)
    (pickled / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    (pickled / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (tmp / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                   + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    locked = tmp / "locked.png"
    Image.new("RGB", (8, 8)).save(locked)
    locked.chmod(0)
    # input videos (film.shots.N.input_video): text called .mp4; 5 frames where 16 are wanted
    (tmp / "notes.mp4").write_text("not a video\n")
    from samples.make_samples import pose_frames, write_mp4

    write_mp4(pose_frames(5, 64, 64), tmp / "short.mp4", fps=8)
    return tmp.resolve()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inputs(tmp_path_factory.mktemp("bad_inputs"))


def expand(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{root}", str(ROOT))


def argv_of(row: Row, tmp: Path) -> list[str]:
    """The row's command line minus `python -m flows.render`, placeholders filled in."""
    words = shlex.split(row.command)
    assert words[:3] == ["python", "-m", "flows.render"], row.command
    return [expand(w, tmp) for w in words[3:]]


def assert_message(row: Row, line: str, tmp: Path) -> None:
    expected = expand(row.message, tmp)
    if row.match == "exact":
        assert line == expected
    else:
        fragment = expected.removesuffix(" …")
        assert line.startswith(fragment), f"{line!r} does not start with {fragment!r}"


def as_a_user(row: Row, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads any file whatever its mode: for the unreadable-file row, answer the access
    check as an ordinary user would (mode 000 = no read access). Others run as they are."""
    if row.id != "init-image-unreadable" or os.geteuid() != 0:
        return
    import flows.checks

    real = os.access
    monkeypatch.setattr(flows.checks.os, "access",
                        lambda p, mode: real(p, mode) and os.stat(p).st_mode & 0o444 != 0)


def test_the_table_has_at_least_30_rows_with_unique_ids() -> None:
    ids = [r.id for r in ROWS]
    assert len(ROWS) >= 30
    assert len(set(ids)) == len(ids), sorted(i for i in ids if ids.count(i) > 1)
    for row in ROWS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", row.id), row.id
        assert row.match in ("exact", "prefix"), row
        assert row.message.startswith("error: "), row
        assert row.message.endswith(" …") == (row.match == "prefix"), row
        assert "\n" not in row.message
    assert set(CLI_ROWS) <= set(BY_ID)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_row(row: Row, inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `python -m flows.render <row>` checks before Hydra runs the job, in this process."""
    from flows.checks import cli_overrides
    from flows.render import compose_config

    as_a_user(row, monkeypatch)
    monkeypatch.chdir(ROOT)  # relative paths resolve as from `make render`
    with pytest.raises(PromptreelError) as info:
        compose_config(cli_overrides(argv_of(row, inputs)))
    assert_message(row, f"error: {info.value}", inputs)


@pytest.mark.parametrize("row_id", CLI_ROWS)
def test_row_on_the_command_line(row_id: str, inputs: Path, tmp_path: Path) -> None:
    """The real command line: exit code 2, the documented line on stderr, no traceback, and no
    artefact cache created (nothing ran)."""
    row = BY_ID[row_id]
    proc = run_cli(*argv_of(row, inputs), cache=tmp_path / "cache", models=tmp_path / "models",
                   run_dir=tmp_path / "run", check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert_message(row, errors[0], inputs)
    assert not (tmp_path / "cache").exists()


def test_a_model_not_downloaded_with_downloads_off_stops_within_seconds(
        inputs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runtime.download=false and a hub model not on disk: the config check names the repo, the
    revision and the fetch command at once (no network touched, no model loaded)."""
    import time

    from flows.checks import cli_overrides
    from flows.render import compose_config

    row = BY_ID["wan-offline-not-fetched"]
    monkeypatch.chdir(ROOT)
    started = time.monotonic()
    with pytest.raises(PromptreelError) as info:
        compose_config(cli_overrides(argv_of(row, inputs)))
    assert time.monotonic() - started < 10
    assert_message(row, f"error: {info.value}", inputs)
