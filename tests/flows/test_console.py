"""The console of a render (flows/console.py): named Prefect lines, a progress bar per shot,
--quiet and --verbose. Log records made here as Prefect and generate_frames make them."""

from __future__ import annotations

import io
import logging

import pytest

from flows import console


def record(name: str, msg: str, level: int = logging.INFO, **extra) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


@pytest.fixture
def handler():
    """The console handler on the root logger, as Hydra's job logging sets it up."""
    out = io.StringIO()
    h = console.ConsoleHandler(stream=out)
    h.setFormatter(console.RunFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(h)
    yield h, out
    root.removeHandler(h)
    h.close()
    console.setup(console.NORMAL)
    root.setLevel(level)


def log(name: str, msg: str, level: int = logging.INFO, **extra) -> None:
    logging.getLogger(None if name == "root" else name).log(level, msg, extra=extra)


def frames(h: console.ConsoleHandler, shot: str, n: int) -> None:
    for i in range(n):  # as tasks/generate_frames.py logs each committed frame
        log("promptreel", f"{shot}: frame {i + 1}/{n}  loss 1.0", progress=(shot, i + 1, n))


def test_prefect_lines_name_their_task_or_flow_run() -> None:
    fmt = console.RunFormatter()
    task = record("prefect.task_runs", "Finished in state Completed()",
                  task_run_name="generate_frames-3f2", task_name="generate_frames",
                  flow_run_name="calm-fox", flow_name="production")
    assert fmt.format(task).endswith(
        "prefect.task_runs: generate_frames-3f2: Finished in state Completed()")
    flow = record("prefect.flow_runs", "Finished in state Completed()",
                  flow_run_name="calm-fox", flow_name="production")
    assert fmt.format(flow).endswith(
        "prefect.flow_runs: production 'calm-fox': Finished in state Completed()")
    begun = record("prefect.flow_runs", "Beginning subflow run 'calm-fox' for flow 'production'",
                   flow_run_name="calm-fox", flow_name="production")
    assert fmt.format(begun).endswith(": Beginning subflow run 'calm-fox' for flow 'production'")
    assert fmt.format(record("promptreel", "done")).endswith(" promptreel: done")


def test_a_progress_bar_per_shot_instead_of_a_line_per_frame(handler) -> None:
    h, out = handler
    console.setup(console.NORMAL)
    frames(h, "evolve", 12)
    frames(h, "zoom", 5)
    text = out.getvalue()
    assert "frame 3/12" not in text  # the frame lines went to the bars
    bars = [line for line in text.splitlines() if "frames" in line]
    assert len(bars) == 2
    assert bars[0].startswith("evolve") and "12/12 frames" in bars[0] and "s/frame" in bars[0]
    assert "ETA" in bars[0]
    assert bars[1].startswith("zoom") and "5/5 frames" in bars[1]


def test_quiet_shows_warnings_only_and_verbose_everything(handler) -> None:
    h, out = handler
    console.setup(console.QUIET)
    log("promptreel.tasks", "Finished in state Completed()", task_run_name="t-1")
    log("promptreel", "low disk", logging.WARNING)
    frames(h, "evolve", 3)
    assert out.getvalue().strip().endswith("promptreel: low disk")
    assert len(out.getvalue().strip().splitlines()) == 1

    out.truncate(0)
    out.seek(0)
    console.setup(console.VERBOSE)
    assert logging.getLogger().level == logging.DEBUG
    frames(h, "evolve", 3)
    log("root", "Loaded model config")  # open_clip logs on the root logger
    text = out.getvalue()
    assert "evolve: frame 2/3" in text and "Loaded model config" in text

    out.truncate(0)
    out.seek(0)
    console.setup(console.NORMAL)
    log("root", "Loaded model config")
    log("EventsWorker", "Still processing items: 3 items remaining...", logging.WARNING)
    assert out.getvalue() == ""  # library chatter stays in render.log


def test_flags_are_taken_off_the_command_line() -> None:
    argv = ["flows.render", "film=smoke", "--verbose", "seed=2", "-q"]
    assert console.pop_flags(argv) == console.QUIET  # the last one wins
    assert argv == ["flows.render", "film=smoke", "seed=2"]
    assert console.pop_flags(["x", "film=smoke"]) == console.NORMAL
