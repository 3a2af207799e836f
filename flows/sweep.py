"""Sweeps (Hydra multirun): record failed jobs and write the sweep summary as jobs finish.

Configured as a Hydra callback (Hydra's own config, conf/config.yaml and conf/sweep/*.yaml)::

    hydra:
      callbacks:
        sweep_summary:
          _target_: flows.sweep.SweepSummary

`on_job_end` writes `<job dir>/failed.json` for a job that raised (unless the entry point already
did) and, in a multirun, rewrites `<sweep dir>/summary.*` quietly so the table is current after
every job, even if the sweep is stopped. `on_multirun_end` writes the final summary, prints its
path once, and publishes it as Prefect artifacts from a small `sweep-summary` flow run (Prefect
attaches artifacts to a flow run; created outside one, they are deprecated and warn).
With a remote launcher (Slurm), `on_job_end` runs on the node and `on_multirun_end` on the
submitting host; both read the job dirs on shared storage, so the result is the same.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from engines.core.files import write_json

log = logging.getLogger("promptreel")


def record_failure(job_dir: Path, exc: BaseException) -> Path:
    """Write `<job dir>/failed.json` (error type, message, traceback); return its path."""
    path = Path(job_dir) / "failed.json"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    write_json(path, {"error": type(exc).__name__, "message": str(exc), "traceback": tb})
    return path


def summarise(sweep_dir: Path, *, artifacts: bool, final: bool = False) -> Any:
    """Write the summary; return its table (None if it could not be written). `final`: say
    where it is (once, at the end of the sweep)."""
    from flows.report import sweep_summary

    try:
        df = sweep_summary(sweep_dir, artifacts=False)
        if artifacts:
            publish_summary(sweep_dir, df)
    except Exception as exc:  # noqa: BLE001 - a summary problem must not stop the sweep
        log.warning("sweep summary of %s failed: %s", sweep_dir, exc)
        return None
    failed = df[df["status"] == "failed"]
    log.log(logging.INFO if final else logging.DEBUG, "sweep summary: %s (%d jobs, %d failed)",
            Path(sweep_dir) / "summary.html", len(df), len(failed))
    return df


def publish_summary(sweep_dir: Path, df: Any) -> None:
    """The summary as Prefect table and markdown artifacts of a `sweep-summary` flow run, on
    the server the renders used (the temporary one, or PREFECT_API_URL's)."""
    from prefect import flow

    from flows import prefect_server
    from flows.report import publish, sweep_markdown

    name = Path(sweep_dir).parent.name or "sweep"
    cols = [c for c in ("rank", "job", "overrides", "status", "score", "error") if c in df]

    @flow(name="sweep-summary", log_prints=False)
    def sweep_summary_flow() -> None:
        publish(f"sweep-{name}", df[cols].to_dict("records"), sweep_markdown(sweep_dir, df))

    server = prefect_server.start()
    if server is None:
        sweep_summary_flow()
        return
    from prefect.settings import temporary_settings

    with temporary_settings(prefect_server.prefect_settings(server)):
        sweep_summary_flow()


class SweepSummary(Callback):
    """Hydra callback. `artifacts`: also publish the final summary as Prefect artifacts."""

    def __init__(self, artifacts: bool = True) -> None:
        self.artifacts = artifacts

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED and not (job_dir / "failed.json").exists():
            record_failure(job_dir, job_return._return_value)
        if config.hydra.mode == RunMode.MULTIRUN:
            summarise(Path(config.hydra.sweep.dir), artifacts=False)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Final summary; exit status 1 when a job failed, naming each and why."""
        import sys

        sweep_dir = Path(config.hydra.sweep.dir)
        df = summarise(sweep_dir, artifacts=self.artifacts, final=True)
        if df is None:
            return
        failed = df[df["status"] == "failed"]
        if len(failed):
            for _, row in failed.iterrows():
                print(f"error: sweep job {row['job']} ({row['overrides']}) failed: {row['error']}",
                      file=sys.stderr)
            print(f"error: {len(failed)} of {len(df)} sweep jobs failed; summary: "
                  f"{sweep_dir / 'summary.html'}", file=sys.stderr)
            sys.exit(1)
