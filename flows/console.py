"""What a render prints: log lines that name their Prefect task or flow, one progress bar per
shot (rich), and the `--quiet` / `--verbose` switches.

- normal: promptreel's and Prefect's INFO lines, with each Prefect line naming its task run
  (`generate_frames-3f2: Finished in state Completed()`) or flow run; one progress bar per shot
  (frames done of the shot's total, seconds per frame, time left) instead of a line per frame;
  libraries' INFO chatter (open_clip's model-loading lines, audiocraft) and their deprecation
  warnings stay out of the console.
- `--quiet`: warnings and errors only, then the path of the finished video on stdout.
- `--verbose`: everything at DEBUG, a line per frame, libraries' lines and warnings.

`render.log` in the run directory always has every INFO line, a line per frame included.
The handler and the formatter are named in conf/hydra/job_logging/promptreel.yaml, so Hydra
builds them; nothing here imports Prefect or torch (rich, which Prefect uses, draws the bars).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

QUIET, NORMAL, VERBOSE = -1, 0, 1
VERBOSITY = NORMAL
FLAGS = {"--quiet": QUIET, "-q": QUIET, "--verbose": VERBOSE, "-v": VERBOSE}
# loggers whose INFO lines are only shown with --verbose (they still go to render.log)
CHATTY = ("root", "audiocraft", "httpx", "httpcore", "urllib3", "filelock")
# Prefect's client logs "Still processing items" (a warning) while it sends its last events at
# exit; the queue drains by itself, so the line says nothing a user can act on
QUEUE_SERVICES = ("EventsWorker", "APILogWorker")


def pop_flags(argv: list[str]) -> int:
    """Remove --quiet/-q and --verbose/-v from `argv` (in place); return the verbosity. The
    last one given wins."""
    level = NORMAL
    for arg in list(argv):
        if arg in FLAGS:
            level = FLAGS[arg]
            argv.remove(arg)
    return level


def setup(verbosity: int) -> None:
    """Set the verbosity: logger levels, which warnings show. Call once the logging handlers
    exist (Hydra configures them before `main`)."""
    global VERBOSITY
    VERBOSITY = verbosity
    logging.getLogger().setLevel(logging.DEBUG if verbosity == VERBOSE else logging.INFO)
    for name in QUEUE_SERVICES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity == VERBOSE else logging.ERROR)
    if verbosity < VERBOSE:
        # libraries' deprecation notices (torch's weight_norm in audiocraft, ...): not the user's
        for category in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(?!flows|tasks|engines)")


def run_label(record: logging.LogRecord) -> str | None:
    """The Prefect task run or flow run a record belongs to, or None."""
    task_run = getattr(record, "task_run_name", None)
    if task_run:
        return str(task_run)
    flow, flow_run = getattr(record, "flow_name", None), getattr(record, "flow_run_name", None)
    if flow and flow_run and str(flow_run) not in record.getMessage():
        return f"{flow} '{flow_run}'"
    return None


class RunFormatter(logging.Formatter):
    """`time logger: [task or flow run: ]message`: Prefect's task-state lines name their task."""

    def __init__(self, format: str | None = None, datefmt: str | None = None) -> None:  # noqa: A002 - dictConfig's key
        super().__init__(format or "%(asctime)s %(name)s: %(message)s", datefmt or "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        label = run_label(record)
        if label is None:
            return super().formatMessage(record)
        saved = record.message
        record.message = f"{label}: {saved}"
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved


class SecondsPerFrame(ProgressColumn):
    """Seconds per frame, over the frames rendered by this process."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{1 / speed:.2f} s/frame" if speed else "- s/frame")


class ConsoleHandler(logging.Handler):
    """The console: log lines, and a rich progress bar per shot fed by the frame records of
    `generate_frames` (records with a `progress` attribute: (shot, frames done, frames))."""

    def __init__(self, stream: Any = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.stream = stream
        self._console: Any = None
        self._bars: dict[str, tuple[Any, Any]] = {}

    @property
    def console(self) -> Any:
        if self._console is None:
            self._console = Console(file=self.stream or sys.stdout, highlight=False,
                                    markup=False, emoji=False, soft_wrap=True)
        return self._console

    def shown(self, record: logging.LogRecord) -> bool:
        if VERBOSITY == QUIET:
            return record.levelno >= logging.WARNING
        if VERBOSITY == NORMAL and record.levelno < logging.WARNING:
            top = record.name.split(".")[0]
            return top not in CHATTY and not getattr(record, "progress", None)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            progress = getattr(record, "progress", None)
            if progress and VERBOSITY == NORMAL:
                self.advance(*progress)
            if self.shown(record):
                self.console.print(self.format(record), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never stop a render
            self.handleError(record)

    def advance(self, shot: str, done: int, total: int) -> None:
        if shot not in self._bars:
            bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("frames"), SecondsPerFrame(), TimeElapsedColumn(),
                           TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            task = bar.add_task(shot, total=total, completed=done - 1)
            bar.start()
            self._bars[shot] = (bar, task)
        bar, task = self._bars[shot]
        bar.update(task, completed=done, total=total)
        if done >= total:
            bar.stop()
            del self._bars[shot]

    def close(self) -> None:
        for bar, _ in self._bars.values():
            bar.stop()
        self._bars.clear()
        super().close()
