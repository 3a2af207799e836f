"""The `FrameSink` engines commit to (engines/frames/base.py): a resumable work directory of
`generate_frames`.

Layout inside `<key>.work/`: `frames/000000.png ...`; `state-<n>.pt`, the engine's last durable
state (what it needs to continue: after the last committed frame, or mid-chunk after step k of a
diffusion engine); `progress.json`, the commit point: the frame count, per frame its file size,
sha256 and the engine's metrics record, and the name and sha256 of the state file in force.

Order of a commit: the frame PNG, then a new state file under a new name, then `progress.json`
(atomically), then the previous state file is deleted. A kill at any point leaves either the old
progress (with its own state file, still on disk) or the new one: never a count without its
frame, nor a frame without the state that continues after it. On resume, frames past the count
are ignored and overwritten, frames within it are re-verified, and a state file that does not
match its recorded hash means the shot starts over.

`seed_from(source)` starts an empty work dir from another render of the same shot whose plan was
a prefix of this one (a committed artefact or another work dir: both keep `progress.json` and
their last state file): its frames and state are hard-linked (or copied), `progress.json` last,
so a kill while seeding leaves a work dir that resumes at frame 0. `stop` (tasks/stop.py): asked
after each commit; when it says so, `ShotStopped` is raised with the frame count, once the frame
and its state are durable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from engines.core.crash import kill_point
from engines.core.files import describe_file, link_or_copy, sha256_file, write_bytes, write_json


def frame_name(index: int) -> str:
    return f"frames/{index:06d}.png"


class DirectorySink:
    def __init__(self, work: Path, *, on_commit: Any = None, stop: Any = None):
        self.work = Path(work)
        (self.work / "frames").mkdir(parents=True, exist_ok=True)
        self.progress_path = self.work / "progress.json"
        self.records: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.state_file: dict[str, Any] | None = None  # {"name", "sha256"} of the state in force
        self.seq = 0  # number of the next state file
        self.on_commit = on_commit
        self.stop = stop  # () -> bool: end the shot after this commit (open-ended shots)

    def resume(self) -> tuple[int, dict[str, Any] | None]:
        try:
            progress = json.loads(self.progress_path.read_text())
            files, records = progress["files"], progress["records"]
            state_file, seq = progress.get("state"), int(progress.get("seq", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return 0, None
        for i, info in enumerate(files):  # a frame altered since it was committed: start over
            fp = self.work / frame_name(i)
            if not fp.is_file() or fp.stat().st_size != info["size"] or sha256_file(fp) != info["sha256"]:
                return 0, None
        state = None
        if state_file is not None:
            import torch

            path = self.work / state_file["name"]
            try:
                if sha256_file(path) != state_file["sha256"]:
                    return 0, None
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a torn or missing state means: start the shot over
                return 0, None
        elif files:
            return 0, None  # frames without the state that continues after them
        self.files, self.records = list(files), list(records)
        self.state_file, self.seq = state_file, seq
        return len(files), state

    def _write_state(self, state: dict[str, Any]) -> dict[str, Any]:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        name = f"state-{self.seq:06d}.pt"
        write_bytes(self.work / name, buf.getvalue())
        self.seq += 1
        return {"name": name, **describe_file(self.work / name)}

    def _write_progress(self, state_file: dict[str, Any] | None) -> None:
        old = self.state_file
        write_json(self.progress_path, {"files": self.files, "records": self.records,
                                        "state": state_file, "seq": self.seq})
        self.state_file = state_file
        if old is not None and (state_file is None or old["name"] != state_file["name"]):
            (self.work / old["name"]).unlink(missing_ok=True)

    def commit(self, index: int, image: Any, state: dict[str, Any] | None,
               record: dict[str, Any]) -> None:
        """Commit frame `index` and (unless None) the state that continues after it."""
        from PIL import Image

        if index != len(self.files):
            raise RuntimeError(f"frame {index} committed out of order (expected {len(self.files)})")
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", optimize=False, compress_level=6)
        path = self.work / frame_name(index)
        write_bytes(path, buf.getvalue())
        kill_point(f"frame:{index}")  # crash-test hook (inert unless PROMPTREEL_TEST_KILL_AT)
        state_file = self.state_file if state is None else self._write_state(state)
        self.files.append({"size": path.stat().st_size, "sha256": sha256_file(path)})
        self.records.append({"frame": index, **record})
        self._write_progress(state_file)
        if self.on_commit is not None:
            self.on_commit(index, record)
        if self.stop is not None and self.stop():
            from tasks.stop import ShotStopped

            raise ShotStopped(len(self.files))

    def save_state(self, state: dict[str, Any]) -> None:
        """Make `state` the durable state without committing a frame (mid-chunk progress)."""
        seq = self.seq
        state_file = self._write_state(state)
        kill_point(f"state:{seq}")  # crash-test hook: the new state is on disk, not yet in force
        self._write_progress(state_file)

    def seed_from(self, source: Path) -> int:
        """Start this empty work dir from `source`'s committed frames and last state; returns
        the frame count taken (0 if `source` holds nothing usable). The caller has checked that
        `source` rendered the first frames of this shot (tasks/generate_frames.py)."""
        try:
            progress = json.loads((Path(source) / "progress.json").read_text())
            files, records, state = progress["files"], progress["records"], progress["state"]
            seq = int(progress.get("seq", 0))
        except (OSError, ValueError, KeyError, TypeError):
            return 0
        if not files or state is None:
            return 0
        try:
            for i in range(len(files)):
                link_or_copy(Path(source) / frame_name(i), self.work / frame_name(i))
            link_or_copy(Path(source) / state["name"], self.work / state["name"])
        except OSError:
            return 0
        kill_point("seed")  # crash-test hook: frames in place, no progress yet
        write_json(self.progress_path, {"files": files, "records": records, "state": state,
                                        "seq": seq})
        return len(files)
