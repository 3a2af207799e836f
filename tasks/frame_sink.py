"""The `FrameSink` engines commit frames to: a resumable work directory of `generate_frames`.

Layout inside `<key>.work/`: `frames/000000.png ...`, `state.pt` (what the engine needs to continue
after the last committed frame), `progress.json` (count, and per frame: file size, sha256 and the
engine's metrics record). Commit order is frame, state, progress, each written atomically, so the
progress file never counts a frame or state that is not fully on disk. On resume, frames past the
count (from a commit cut short) are ignored and overwritten; frames within it are re-verified.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from tasks.artefacts import describe_file, kill_point, sha256_file, write_bytes, write_json


def frame_name(index: int) -> str:
    return f"frames/{index:06d}.png"


class DirectorySink:
    def __init__(self, work: Path, *, on_commit: Any = None):
        self.work = Path(work)
        (self.work / "frames").mkdir(parents=True, exist_ok=True)
        self.progress_path = self.work / "progress.json"
        self.records: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.on_commit = on_commit

    def resume(self) -> tuple[int, dict[str, Any] | None]:
        try:
            progress = json.loads(self.progress_path.read_text())
            files, records = progress["files"], progress["records"]
        except (OSError, ValueError, KeyError):
            return 0, None
        for i, info in enumerate(files):  # a frame altered since it was committed: start over
            fp = self.work / frame_name(i)
            if not fp.is_file() or fp.stat().st_size != info["size"] or sha256_file(fp) != info["sha256"]:
                return 0, None
        import torch

        try:
            state = torch.load(self.work / "state.pt", map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or missing state means: start the shot over
            return 0, None
        if state.get("_frame") != len(files) - 1:
            return 0, None
        self.files, self.records = list(files), list(records)
        return len(files), state

    def commit(self, index: int, image: Any, state: dict[str, Any],
               record: dict[str, Any]) -> None:
        import torch
        from PIL import Image

        if index != len(self.files):
            raise RuntimeError(f"frame {index} committed out of order (expected {len(self.files)})")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=6)
        path = self.work / frame_name(index)
        write_bytes(path, buf.getvalue())
        kill_point(f"frame:{index}")  # crash-test hook (inert unless PROMPTREEL_TEST_KILL_AT)
        buf = io.BytesIO()
        torch.save({**state, "_frame": index}, buf)
        write_bytes(self.work / "state.pt", buf.getvalue())
        self.files.append(describe_file(path))
        self.records.append({"frame": index, **record})
        write_json(self.progress_path, {"files": self.files, "records": self.records})
        if self.on_commit is not None:
            self.on_commit(index, record)
