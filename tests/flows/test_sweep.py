"""Sweeps: presets compose, the callback records failed jobs, the summary has one row per job."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import repo_env

ROOT = Path(__file__).resolve().parents[2]

APP = """
import json, pathlib, hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    if cfg.x == 2:
        raise ValueError("x=2 is not accepted")
    out = pathlib.Path(HydraConfig.get().runtime.output_dir) / "report"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"score": cfg.x / 10, "cached": 0}))

main()
"""


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize(("preset", "key", "values"), [
    ("seeds", "seed", "1,2,3,4"), ("resolutions", "resolution", "r256,r512x288,r640x360")])
def test_sweep_presets_compose(preset: str, key: str, values: str) -> None:
    cfg = compose(["film=smoke", f"+sweep={preset}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {key: values}
    assert cfg.hydra.callbacks.sweep_summary._target_ == "flows.sweep.SweepSummary"
    assert "sweep" not in cfg  # a global package: nothing reaches the render config
    for name in values.split(",") if key == "resolution" else ():
        assert (ROOT / "conf" / "resolution" / f"{name}.yaml").is_file()


def test_slurm_launcher_config_uses_only_plugin_keys() -> None:
    conf = yaml.safe_load((ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml").read_text())
    plugin_keys = {  # hydra_submitit_launcher.config.SlurmQueueConf (1.2.0)
        "submitit_folder", "timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node",
        "mem_gb", "nodes", "name", "stderr_to_stdout", "partition", "qos", "comment",
        "constraint", "exclude", "gres", "cpus_per_gpu", "gpus_per_task", "mem_per_gpu",
        "mem_per_cpu", "account", "signal_delay_s", "max_num_timeout", "additional_parameters",
        "array_parallelism", "setup"}
    assert conf["defaults"] == ["submitit_slurm", "_self_"]
    assert set(conf) - {"defaults"} <= plugin_keys
    assert conf["gpus_per_node"] == 1 and conf["tasks_per_node"] == 1


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    """A real Hydra multirun with the callback: job 1 raises, jobs 0 and 2 still run."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(textwrap.dedent("""
        x: 1
        hydra:
          callbacks:
            sweep_summary: {_target_: flows.sweep.SweepSummary, artifacts: false}
        """))
    (tmp_path / "app.py").write_text(APP)
    sweep = tmp_path / "sweep"
    env = repo_env()
    proc = subprocess.run([sys.executable, "app.py", "-m", "x=1,2,3", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    # Hydra's basic sweeper re-raises the first failure after the batch: every job has run
    assert proc.returncode != 0 and "x=2 is not accepted" in proc.stderr
    failed = json.loads((sweep / "1" / "failed.json").read_text())
    assert failed["error"] == "ValueError" and failed["message"] == "x=2 is not accepted"
    assert "raise ValueError" in failed["traceback"]
    summary = pd.read_csv(sweep / "summary.csv")
    assert summary["job"].tolist() == [2, 0, 1]
    assert summary["status"].tolist() == ["ok", "ok", "failed"]
    assert summary["score"].tolist()[:2] == [0.3, 0.1]
    assert summary["overrides"].tolist() == ["x=3", "x=1", "x=2"]
    diffs = pd.read_csv(sweep / "config_differences.csv")
    assert diffs["x"].tolist() == [1, 2, 3]


def test_callback_on_job_end_writes_failed_json(tmp_path: Path) -> None:
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from flows.sweep import SweepSummary

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job)}, "mode": RunMode.RUN,
                                      "sweep": {"dir": str(tmp_path)}}})
    ret = JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("out of memory"))
    SweepSummary(artifacts=False).on_job_end(cfg, ret)
    assert json.loads((job / "failed.json").read_text())["message"] == "out of memory"
    assert not (tmp_path / "summary.csv").exists()  # a single run writes no sweep summary


@pytest.mark.slow
def test_smoke_sweep_2x2_makes_4_runs_and_again_computes_nothing(tmp_path: Path,
                                                                 models_dir: Path) -> None:
    """A seed x resolution sweep of a film kept outside the repository (--config-dir): four
    runs, a summary with one grid cell per job, printed once, with no Prefect warning; the
    same sweep again computes nothing."""
    from flows.report import html_links
    from tests.browser import find_chromium, media_report
    from tests.flows.test_report import grid_cells
    from tests.helpers import run_cli

    films = tmp_path / "films"
    (films / "film").mkdir(parents=True)
    text = (ROOT / "conf" / "film" / "smoke.yaml").read_text()
    (films / "film" / "my_smoke.yaml").write_text(text.replace("name: smoke", "name: my_smoke"))
    grid = ["film=my_smoke", "+sweep=seeds", "seed=1,2", "resolution=r64,r96x64"]
    tables = {}
    for name in ("first", "again"):
        proc = run_cli(*grid, f"hydra.sweep.dir={tmp_path / name}", "--config-dir", str(films),
                       cache=tmp_path / "cache", models=models_dir, timeout=900)
        out = proc.stdout + proc.stderr
        assert out.count("sweep summary: ") == 1, out[-3000:]
        assert "Warning" not in out and "Still processing items" not in out
        tables[name] = pd.read_csv(tmp_path / name / "summary.csv")
        assert html_links(tmp_path / name / "summary.html")[1] == []
        assert sorted(grid_cells(tmp_path / name / "summary.html")) == ["0", "1", "2", "3"]
    first, again = tables["first"], tables["again"]
    assert len(first) == 4 and first["status"].tolist() == ["ok"] * 4
    assert sorted(first["overrides"]) == sorted(again["overrides"]) == sorted(
        f"seed={s} resolution={r}" for s in (1, 2) for r in ("r64", "r96x64"))
    assert first["score"].notna().all() and first["score"].is_monotonic_decreasing
    assert first["computed"].sum() > 0 and again["computed"].sum() == 0  # all cache hits
    assert again["score"].tolist() == first["score"].tolist()
    diffs = pd.read_csv(tmp_path / "first" / "config_differences.csv")
    assert {"seed", "resolution.name", "resolution.width"} <= set(diffs.columns)
    if find_chromium():  # the takes play inline, in the grid and in the ranked list
        seen = media_report(tmp_path / "first" / "summary.html")
        assert len(seen["videos"]) == 8
        assert all(v["error"] is None and v["duration"] > 0 for v in seen["videos"])


def test_cli_sweep_with_bad_jobs_goes_on_and_exits_1_naming_them(tmp_path: Path,
                                                                  models_dir: Path) -> None:
    from tests.helpers import run_cli

    proc = run_cli("-m", "film=smoke", "film.fps=0,-2", f"hydra.sweep.dir={tmp_path / 's'}",
                   cache=tmp_path / "cache", models=models_dir, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error: sweep job 0 (film.fps=0) failed: ConfigError: film.fps: bad value 0" in proc.stderr
    assert "error: sweep job 1 (film.fps=-2) failed: ConfigError: film.fps: bad value -2" in proc.stderr
    assert "error: 2 of 2 sweep jobs failed" in proc.stderr
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert summary["status"].tolist() == ["failed", "failed"]
    assert summary["overrides"].tolist() == ["film.fps=0", "film.fps=-2"]
