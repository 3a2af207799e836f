"""The Hydra entry point and the parent flow: `python -m flows.render film=<preset> [overrides]`.

The only module that touches Hydra/OmegaConf: it turns the composed config into a frozen
`RenderConfig` once (flows/config.py), then runs the three stage flows. `--show` prints the
resolved config and the planned timeline, and plots every shot's schedules into an image; it
runs nothing. `--doctor` checks the machine, `--fetch-models` downloads. `--quiet` / `--verbose`
set what the console shows (flows/console.py). `--config-dir DIR` adds DIR (films in DIR/film/)
to where presets are found, for every one of these.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from flows import console, env

ROOT = env.ROOT
env.apply()  # before prefect is imported: it reads its settings from the environment

# Prefect and the stage flows (tasks, pandas, engines) are imported once the config is valid and
# Prefect's temporary server has been started: they load while it boots (about 2 s on 2 cores).
import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from engines.core.errors import PromptreelError  # noqa: E402
from flows import prefect_server  # noqa: E402
from flows.checks import check_overrides, cli, hydra_error  # noqa: E402

log = logging.getLogger("promptreel")


class ExpectedErrors(logging.Filter):
    """Prefect logs a failed task's or flow's exception with its traceback, once per level of
    nesting (three times for one error). A PromptreelError is bad input or a missing resource,
    which the user fixes from its message, printed once at the end as `error: ...`: its records
    keep their one-line message and lose the traceback. Any other exception (a bug) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PromptreelError):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    if not any(isinstance(f, ExpectedErrors) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(ExpectedErrors())
VERBOSITY = console.pop_flags(sys.argv) if __name__ == "__main__" else console.NORMAL
SHOW = "--show" in sys.argv
FETCH = "--fetch-models" in sys.argv
DOCTOR = "--doctor" in sys.argv
for _flag in ("--show", "--fetch-models", "--doctor"):
    while _flag in sys.argv:
        sys.argv.remove(_flag)

def to_config(dcfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig

    from flows.config import build_config

    hc = HydraConfig.get()
    check_overrides(list(hc.overrides.task) + list(hc.overrides.hydra))
    raw = OmegaConf.to_container(dcfg, resolve=True)
    runtime = raw.pop("runtime")
    runtime["run_dir"] = str(Path(hc.runtime.output_dir).resolve())
    return build_config(raw, runtime)


def search_path_override(config_dir: Path) -> str:
    """The override that adds `config_dir` to Hydra's search path, as `--config-dir` does."""
    quoted = str(config_dir).replace("\\", "\\\\").replace("'", "\\'")
    return f"hydra.searchpath=['file://{quoted}']"


def compose_config(overrides: list[str], *, run_dir: str | None = None,
                   config_dir: Path | None = None):
    """The same RenderConfig the command line builds, from a list of overrides (tests, serving,
    the read-only flags); `config_dir` as the command line's `--config-dir`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException

    from flows.config import build_config

    check_overrides(list(overrides))
    extra = [search_path_override(config_dir)] if config_dir is not None else []
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            dcfg = compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
    except HydraException as exc:
        raise hydra_error(exc) from None
    with open_dict(dcfg):
        dcfg.hydra.runtime.cwd = os.getcwd()
        dcfg.hydra.runtime.output_dir = run_dir or str(ROOT / "outputs" / "runs" / "composed")
    HydraConfig.instance().set_config(dcfg)
    body = OmegaConf.masked_copy(dcfg, [k for k in dcfg if k != "hydra"])
    raw = OmegaConf.to_container(body, resolve=True)
    runtime = raw.pop("runtime")
    runtime["run_dir"] = dcfg.hydra.runtime.output_dir
    return build_config(raw, runtime)


def show_plot_path(cfg) -> Path:
    """Where `--show` writes its plot: outputs/show/<film>_schedules.png (replaced each time)."""
    return Path.cwd() / "outputs" / "show" / f"{cfg.film.name}_schedules.png"


def show(cfg) -> None:
    """Print the resolved config, the planned timeline and a summary of every shot's schedules,
    and plot the schedules (prompt weights and motion per frame) into an image; run nothing.
    With --verbose, also the table of every frame."""
    from engines.planning.plan import MOTION_3D
    from engines.planning.timeline import timeline
    from flows.plots import film_schedule_figure, schedule_table
    from tasks.plan_timeline import schedule_table as frame_table

    print(json.dumps(cfg.model_dump(mode="json", exclude={"runtime"}), indent=2, default=str))
    tl = timeline([(s, cfg.shot_speed(s)) for s in cfg.film.shots], cfg.film.fps, cfg.film.fit_fps)
    print("\ntimeline:", json.dumps(tl.as_dict(), indent=2))
    plans = cfg.shot_plans()
    print("\nschedules per shot: prompt weights and camera motion (min..max over the shot)")
    for plan in plans:
        table = schedule_table(plan)
        print(f"  {plan.name}: {plan.n_frames} frames")
        for col in [c for c in table.columns if c.startswith("weight:")]:
            w = table[col].dropna()
            print(f"    weight {w.min():.3g}..{w.max():.3g} on frames {int(table['frame'][w.index].min())}"
                  f"-{int(table['frame'][w.index].max())}: {col[7:]}")
        print("    " + ", ".join(f"{c} {table[c].min():.4g}..{table[c].max():.4g}"
                                 for c in ("zoom", "angle", "translation_x", "translation_y",
                                           *MOTION_3D) if c in table))
    path = film_schedule_figure(plans, show_plot_path(cfg),
                                f"{cfg.film.name}: prompt weights and camera motion per frame")
    print(f"\nschedule plot: {path}")
    if console.VERBOSITY == console.VERBOSE:
        print("\nschedules: prompt weights and camera motion per frame")
        print(frame_table(plans).to_string(index=False, float_format=lambda v: f"{v:.4f}",
                                           max_colwidth=90))


_RENDER_FLOW = None


def render_film(cfg) -> dict:
    """Run the parent flow `render` (a Prefect flow, built on first use) on `cfg`."""
    global _RENDER_FLOW
    if _RENDER_FLOW is None:
        from prefect import flow

        _RENDER_FLOW = flow(name="render")(render)
    return _RENDER_FLOW(cfg)


def render(cfg) -> dict:
    """The parent flow: pre-production -> production -> post-production, then the run record."""
    from engines.core.files import link_or_copy, write_json
    from engines.planning.plan import ShotPlans
    from flows.post_production import post_production
    from flows.pre_production import pre_production
    from flows.production import production
    from tasks.cache import LEDGER

    LEDGER.clear()
    timeline, plans, models = pre_production(cfg)
    shots, soundtrack, timeline = production(cfg, timeline, ShotPlans(plans), models)
    final = post_production(cfg, timeline, shots, soundtrack, models)
    run_dir = Path(cfg.runtime.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    video = run_dir / final.meta["video"]
    link_or_copy(final.file(final.meta["video"]), video)
    record = {
        "film": cfg.film.name, "seed": cfg.seed, "seed_drawn": cfg.seed_drawn,
        "video": str(video), "timeline": timeline.meta,
        "models": {name: p.folder for name, p in models.items()},
        "artefacts": {"plan_timeline": timeline.key, "shots": [s.key for s in shots],
                      "compose_soundtrack": soundtrack.key if soundtrack else None,
                      "export_video": final.key, "export_dir": final.path},
        "soundtrack_prompt": soundtrack.meta.get("prompt") if soundtrack else None,
        "tasks": list(LEDGER),
    }
    write_json(run_dir / "run.json", record)
    try:  # the video is already safe; a report problem is logged, never fails the render
        from flows.report import run_report

        record["report"] = str(run_report(cfg, record))
    except Exception as exc:  # noqa: BLE001
        log.warning("run report of %s not written: %s: %s", run_dir, type(exc).__name__, exc)
    return record


def render_overrides(overrides: list[str], run_dir_of=None) -> dict:
    """Compose the config from command-line style overrides and run the parent flow; the render
    log goes to `<run dir>/render.log`. `run_dir_of(film name)` picks the run dir. Used by queued
    renders (flows/serve.py)."""
    cfg = compose_config(list(overrides))
    if run_dir_of is not None:
        run_dir = Path(run_dir_of(cfg.film.name))
        cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"run_dir": run_dir})})
    run_dir = Path(cfg.runtime.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "render.log")
    handler.setFormatter(console.RunFormatter())
    log.addHandler(handler)
    try:
        return render_film(cfg)
    finally:
        log.removeHandler(handler)
        handler.close()


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    started = time.perf_counter()
    console.setup(VERBOSITY)
    try:
        cfg = to_config(dcfg)
        if cfg.seed_drawn:
            log.info("seed -1: drew seed %d (recorded in run.json)", cfg.seed)
        if SHOW or DOCTOR or FETCH:
            code = read_only(cfg)
            if code:
                sys.exit(code)
            return
        install_stop_handler()
        server = prefect_server.start()  # only now: a bad config must not start a server
        if server is None:  # PREFECT_API_URL names one (`make server`)
            record = render_film(cfg)
        else:
            import open_clip  # noqa: F401 - the render's heavy imports, while the server boots
            import torch  # noqa: F401
            from prefect.settings import temporary_settings

            import flows.post_production  # noqa: F401
            import flows.pre_production  # noqa: F401
            import flows.production  # noqa: F401

            log.debug("imports done %.1f s after the start", time.perf_counter() - started)
            with temporary_settings(prefect_server.prefect_settings(server)):
                record = render_film(cfg)
        log.info("done in %.1f s: %s", time.perf_counter() - started, record.get("video"))
        if record.get("report"):
            log.info("report: %s", record["report"])
        if VERBOSITY == console.QUIET:
            print(record.get("video"), flush=True)
    except PromptreelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if in_multirun():  # a failed job must not stop the sweep: record it, go on to the next
            from hydra.core.hydra_config import HydraConfig

            from flows.sweep import record_failure

            record_failure(Path(HydraConfig.get().runtime.output_dir), exc)
            return
        sys.exit(2)


def install_stop_handler() -> None:
    """Ctrl-C (SIGINT) while an open-ended shot renders ends that shot after its frame in
    progress (tasks/stop.py); the render then goes on to the export. Otherwise, or a second
    time, Ctrl-C interrupts as usual."""
    import signal

    from tasks import stop

    def handler(signum: int, frame: object) -> None:
        if stop.active() and not stop.requested():
            stop.request_stop()
            log.warning("stop requested: the open-ended shot ends after the frame in progress "
                        "(Ctrl-C again to abort the render)")
            return
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)


def read_only(cfg) -> int:
    """--show, --doctor, --fetch-models: report on (or fetch for) a config; render nothing."""
    if SHOW:
        show(cfg)
    elif DOCTOR:
        from flows.doctor import doctor

        return doctor(cfg)
    elif FETCH:
        from flows.pre_production import model_entries
        from tasks.select_models import prepare

        for entry in model_entries(cfg):
            print(entry.name, "->", prepare(entry, cfg.runtime.models_dir, download=True).folder)
    return 0


def main_read_only(argv: list[str]) -> None:
    """The read-only flags, composed as a render would be but without Hydra's run directory
    (nothing is left in outputs/runs/). Multirun goes through Hydra (`main`) as usual."""
    from flows.checks import cli_config_dir, cli_overrides

    cfg = compose_config(cli_overrides(argv), config_dir=cli_config_dir(argv))
    if cfg.seed_drawn:
        print(f"seed -1: drew seed {cfg.seed}", file=sys.stderr)
    sys.exit(read_only(cfg))


def fast_exit(code: int) -> None:
    """End the process the way a normal exit would (non-daemon threads joined, atexit handlers
    run: Prefect sends what it still holds, the temporary server stops; logs and stdio flushed),
    then skip the interpreter's teardown of torch, open_clip and Prefect's modules, which takes
    2-3 s on a 2-core machine and does nothing a user needs."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    # overrides checked before Hydra acts; bad input -> `error: ...`, exit 2
    try:
        if (SHOW or DOCTOR or FETCH) and not {"-m", "--multirun"} & set(sys.argv[1:]):
            cli(lambda: main_read_only(sys.argv[1:]), sys.argv[1:])
        else:
            from flows.checks import hydra_argv

            sys.argv[1:] = cli(lambda: hydra_argv(sys.argv[1:]), sys.argv[1:])
            cli(main, sys.argv[1:])
    except SystemExit as exc:
        fast_exit(exit_code(exc))
    fast_exit(0)
