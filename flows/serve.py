"""Overnight renders on Prefect: deployments, schedules, a queue, one render per GPU at a time.

    python -m flows.serve serve  [--schedule default] [--no-schedule]           # make serve
    python -m flows.serve deploy [--schedule default] [--pool P] [--concurrency N]  # make deploy
    python -m flows.serve queue  [--deployment render] [--at ISO-TIME] film=smoke seed=3 # make queue

`serve` registers the `promptreel/render` deployment (cron and time zone from
conf/schedule/<name>.yaml) and runs its renders on this box, at most `concurrency` at
once (default 1: one GPU). `deploy` registers the same deployment on a process work pool instead,
for one `prefect worker start --pool <pool> --limit 1` per GPU box (make worker). `queue` adds a
render with command-line overrides; over the limit it waits (collision strategy ENQUEUE).

Everything needs a Prefect server (make server) and PREFECT_API_URL pointing at it. The flow
composes the config with Hydra's compose API (flows/render.py), so a queued render is the same
render as `make render` with the same overrides, and resumes from committed artefacts.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from flows import env

ROOT = env.ROOT
# before prefect is imported: the project's defaults, and promptreel's log lines in the UI
env.apply({"PREFECT_LOGGING_EXTRA_LOGGERS": "promptreel"})

from prefect import flow  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator  # noqa: E402

from engines.core.errors import ConfigError, PromptreelError  # noqa: E402

FLOW = "promptreel"  # flow name; the deployment is "promptreel/<deployment>"
log = logging.getLogger("promptreel")


class ServeSettings(BaseModel):
    """conf/schedule/<name>.yaml (see conf/schedule/default.yaml for the meaning of each key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    deployment: str = "render"
    cron: str | None = "0 22 * * *"
    timezone: str = "UTC"
    active: bool = True
    overrides: tuple[str, ...] = ("film=klee_garden",)
    concurrency: int = Field(default=1, ge=1, le=64)
    collision: Literal["enqueue", "cancel_new"] = "enqueue"
    work_pool: str = "promptreel-gpu"

    @field_validator("deployment", "work_pool")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v):
            raise ValueError("accepted: letters, digits, '_', '-', '.'")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone such as Europe/Berlin or UTC") from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        from prefect.client.schemas.schedules import CronSchedule

        if v is not None:
            try:
                CronSchedule(cron=v)
            except ValidationError:
                raise ValueError("a cron line 'minute hour day month weekday', e.g. '0 22 * * *'") \
                    from None
        return v


def load_settings(name: str = "default", conf_dir: Path = ROOT / "conf") -> ServeSettings:
    """Read and validate conf/schedule/<name>.yaml."""
    import yaml

    path = conf_dir / "schedule" / f"{name}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError("schedule", name, ", ".join(have), f"no file {path}")
    return validated(yaml.safe_load(path.read_text()) or {}, f"schedule/{name}")


def validated(raw: Any, where: str) -> ServeSettings:
    try:
        return ServeSettings.model_validate(raw)
    except ValidationError as exc:
        from flows.config import validation_error

        raise validation_error(exc, where) from None


# ---------------------------------------------------------------- the deployed flow
def run_dir_for(film: str, overrides: list[str]) -> Path:
    """`hydra.run.dir=` if given, else outputs/runs/<film>/<time>_<flow run name> (unique)."""
    for item in overrides:
        if item.startswith("hydra.run.dir="):
            return Path(item.split("=", 1)[1]).resolve()
    from prefect.runtime import flow_run

    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    name = flow_run.get_name() or "local"
    return ROOT / "outputs" / "runs" / film / f"{stamp}_{name}"


@flow(name=FLOW, log_prints=True)
def render(overrides: list[str]) -> dict[str, Any]:
    """A queued render: `overrides` as on the command line (`["film=smoke", "seed=3"]`)."""
    from flows.render import render_overrides

    return render_overrides(list(overrides), lambda film: run_dir_for(film, list(overrides)))


# ---------------------------------------------------------------- registering
def api_url() -> str:
    """The configured Prefect server, checked for health; a clear error if there is none."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise PromptreelError("no Prefect server configured: start one with `make server` and "
                              "set PREFECT_API_URL=http://127.0.0.1:4200/api (the make targets "
                              "do), or point it at the server box")
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise PromptreelError(f"Prefect server at {url} is not answering ({exc}): start it "
                              "with `make server` (or fix PREFECT_API_URL)") from None
    return url


def schedules(s: ServeSettings) -> list[Any]:
    from prefect.schedules import Cron

    return [Cron(s.cron, timezone=s.timezone, active=s.active)] if s.cron else []


def limit(s: ServeSettings, concurrency: int | None = None) -> Any:
    """At most N runs of the deployment at once; later ones wait (ENQUEUE) or are cancelled."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=concurrency or s.concurrency,
                                  collision_strategy=ConcurrencyLimitStrategy[s.collision.upper()])


def deployment_kwargs(s: ServeSettings, *, with_schedule: bool, concurrency: int | None) -> dict:
    return {"name": s.deployment, "schedules": schedules(s) if with_schedule else [],
            "parameters": {"overrides": list(s.overrides)},
            "concurrency_limit": limit(s, concurrency), "tags": ["promptreel"],
            "description": f"promptreel render; scheduled: {s.cron or 'never'} ({s.timezone})"}


def serve(s: ServeSettings, *, with_schedule: bool = True) -> None:
    """Register the deployment and run its renders here, one at a time (blocks until Ctrl-C)."""
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import EntrypointType

    api_url()
    deployment = render.to_deployment(entrypoint_type=EntrypointType.MODULE_PATH,
                                      **deployment_kwargs(s, with_schedule=with_schedule,
                                                          concurrency=None))
    prefect_serve(deployment, limit=s.concurrency)


def ensure_pool(name: str) -> None:
    """Create the process work pool if it does not exist."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        except ObjectAlreadyExists:
            pass


def deploy(s: ServeSettings, *, pool: str | None = None, concurrency: int | None = None,
           with_schedule: bool = True) -> Any:
    """Register the deployment on a process work pool (workers on every GPU box run it)."""
    api_url()
    pool = pool or s.work_pool
    ensure_pool(pool)
    remote = render.from_source(source=str(ROOT), entrypoint="flows.serve.render")
    return remote.deploy(work_pool_name=pool, build=False, push=False, print_next_steps=False,
                         **deployment_kwargs(s, with_schedule=with_schedule,
                                             concurrency=concurrency))


def queue(overrides: list[str], *, deployment: str = "render", at: datetime | None = None) -> Any:
    """Add a render to the deployment's queue; return the flow run (not waiting for it)."""
    from prefect.deployments import run_deployment

    from flows.checks import check_overrides

    check_overrides(list(overrides))
    api_url()
    return run_deployment(f"{FLOW}/{deployment}", parameters={"overrides": list(overrides)},
                          scheduled_time=at, timeout=0, as_subflow=False)


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "deploy"):
        c = sub.add_parser(name)
        c.add_argument("--schedule", default="default", help="conf/schedule/<name>.yaml")
        c.add_argument("--no-schedule", action="store_true", help="register without the cron")
        c.add_argument("--deployment", default=None, help="deployment name (default: from config)")
        if name == "deploy":
            c.add_argument("--pool", default=None, help="process work pool (default: from config)")
            c.add_argument("--concurrency", type=int, default=None,
                           help="renders at once in all (default: from config)")
    q = sub.add_parser("queue")
    q.add_argument("--deployment", default="render")
    q.add_argument("--at", default=None, help="start no earlier than this ISO time")
    q.add_argument("overrides", nargs="*", help="as for make render: film=smoke seed=3 ...")
    args = p.parse_args(argv)
    try:
        if args.cmd == "queue":
            at = datetime.fromisoformat(args.at).astimezone() if args.at else None
            run = queue(args.overrides, deployment=args.deployment, at=at)
            print(f"queued {run.name} ({run.id}): {' '.join(args.overrides)}")
            return 0
        settings = load_settings(args.schedule)
        if args.deployment:
            settings = validated({**settings.model_dump(), "deployment": args.deployment},
                                 "--deployment")
        if args.cmd == "deploy":
            dep = deploy(settings, pool=args.pool, concurrency=args.concurrency,
                         with_schedule=not args.no_schedule)
            print(f"deployment {FLOW}/{settings.deployment} ({dep}) on work pool "
                  f"{args.pool or settings.work_pool}; start a worker on each GPU box: make worker")
            return 0
        serve(settings, with_schedule=not args.no_schedule)
        return 0
    except PromptreelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from flows.serve import main as _main  # the importable module, not __main__

    sys.exit(_main())
