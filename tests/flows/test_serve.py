"""Serving: schedule settings, and real Prefect servers on loopback running queued smoke renders."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.core.errors import ConfigError, PromptreelError
from flows import serve

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- settings (fast)
def test_default_schedule_settings() -> None:
    s = serve.load_settings()
    kwargs = serve.deployment_kwargs(s, with_schedule=True, concurrency=None)
    assert kwargs["name"] == "render"
    (cron,) = kwargs["schedules"]
    assert (cron.cron, cron.timezone, cron.active) == (s.cron, s.timezone, True)
    assert kwargs["parameters"] == {"overrides": list(s.overrides)}
    limit = kwargs["concurrency_limit"]
    assert (limit.limit, limit.collision_strategy.value) == (1, "ENQUEUE")
    assert serve.deployment_kwargs(s, with_schedule=False, concurrency=3)["schedules"] == []
    assert serve.limit(s, 3).limit == 3


@pytest.mark.parametrize(("text", "key", "bad"), [
    ("timezone: Mars/Olympus", "schedule/x.timezone", "Mars/Olympus"),
    ("cron: '61 * * * *'", "schedule/x.cron", "61 * * * *"),
    ("crontab: '0 1 * * *'", "schedule/x.crontab", "0 1 * * *"),
    ("concurrency: 0", "schedule/x.concurrency", 0),
    ("collision: drop", "schedule/x.collision", "drop")])
def test_bad_schedule_settings_name_the_key(tmp_path: Path, text: str, key: str, bad) -> None:
    (tmp_path / "schedule").mkdir()
    (tmp_path / "schedule" / "x.yaml").write_text(text + "\n")
    with pytest.raises(ConfigError) as err:
        serve.load_settings("x", tmp_path)
    assert (err.value.key, err.value.value) == (key, bad)


def test_unknown_schedule_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="accepted: default"):
        serve.load_settings("nightly_typo")


def test_run_dir_comes_from_hydra_run_dir(tmp_path: Path) -> None:
    assert serve.run_dir_for("smoke", ["seed=1", f"hydra.run.dir={tmp_path}/r"]) == tmp_path / "r"


def test_no_server_is_a_clear_error() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}), \
            pytest.raises(PromptreelError, match="make server"):
        serve.api_url()


# ---------------------------------------------------------------- real server (slow)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A child in its own process group (so its own children stop with it), output to `log`."""
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`make server port=N` (Prefect's server on 127.0.0.1, a free port, its own PREFECT_HOME);
    stopped at the end."""
    import httpx

    home = tmp_path_factory.mktemp("prefect_home")
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": url,
           "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",  # re-check queue (s)
           "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_WORKER_QUERY_SECONDS": "2"}
    port = url.split(":")[2].split("/")[0]
    proc = start([sys.executable, "-m", "flows.prefect_server", "ui", "--port", port], env,
                 home / "server.log")
    children: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "server not ready in 90 s"
                time.sleep(1)
        yield {"url": url, "env": env, "home": home, "children": children}
    finally:
        for child in children:  # workers and runners first: they hang without their server
            stop(child)
        stop(proc)


def queue(server: dict, deployment: str, overrides: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "flows.serve", "queue", "--deployment", deployment,
                          *overrides], cwd=ROOT, env=server["env"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return re.search(r"\(([0-9a-f-]{36})\)", out.stdout).group(1)


def wait_runs(server: dict, ids: list[str], timeout: float) -> list:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: server["url"]}), get_client(sync_client=True) as c:
        while True:
            runs = [c.read_flow_run(i) for i in ids]
            if all(r.state.is_final() for r in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(2)


def smoke(tmp: Path, models: Path, name: str, seed: int) -> list[str]:
    return ["film=smoke", f"seed={seed}", f"runtime.cache_dir={tmp / 'cache'}",
            f"runtime.models_dir={models}", f"hydra.run.dir={tmp / 'runs' / name}"]


def logs(server: dict) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(Path(server["home"]).glob("*.log")))


@pytest.mark.slow
def test_served_deployment_runs_queued_renders_one_at_a_time(server, tmp_path, models_dir) -> None:
    runner = start([sys.executable, "-m", "flows.serve", "serve", "--no-schedule"], server["env"],
                   Path(server["home"]) / "serve.log")
    server["children"].append(runner)
    deadline = time.monotonic() + 60
    while "being served" not in (Path(server["home"]) / "serve.log").read_text():
        assert runner.poll() is None and time.monotonic() < deadline, logs(server)
        time.sleep(1)
    ids = [queue(server, "render", smoke(tmp_path, models_dir, f"r{i}", seed)) for i, seed
           in enumerate((1, 2))]
    runs = wait_runs(server, ids, timeout=420)
    assert [r.state_name for r in runs] == ["Completed", "Completed"], logs(server)
    first, second = sorted(runs, key=lambda r: r.start_time)
    assert first.end_time <= second.start_time  # one render at a time, the other waited
    for i in range(2):
        record = json.loads((tmp_path / "runs" / f"r{i}" / "run.json").read_text())
        assert Path(record["video"]).is_file() and record["seed"] == i + 1
    stop(runner)


@pytest.mark.slow
def test_two_workers_share_keys_without_rendering_one_twice(server, tmp_path, models_dir) -> None:
    pool = "test-gpu"
    out = subprocess.run([sys.executable, "-m", "flows.serve", "deploy", "--pool", pool,
                          "--deployment", "pooled", "--concurrency", "2", "--no-schedule"],
                         cwd=ROOT, env=server["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    for w in ("w1", "w2"):
        cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
               "process", "--limit", "1", "--name", w]
        server["children"].append(start(cmd, server["env"], Path(server["home"]) / f"{w}.log"))
    names = ["r1", "r2", "r3", "r4"]  # the same config four times: every artefact key shared
    ids = [queue(server, "pooled", smoke(tmp_path, models_dir, n, 1)) for n in names]
    runs = wait_runs(server, ids, timeout=600)
    assert [r.state_name for r in runs] == ["Completed"] * 4, logs(server)
    spans = sorted((r.start_time, r.end_time) for r in runs)
    assert any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)), "no two ran at once"
    for w in ("w1", "w2"):  # both boxes took work
        text = (Path(server["home"]) / f"{w}.log").read_text()
        assert any(i in text for i in ids), text[-2000:]
    built: dict[tuple[str, str], int] = {}
    for n in names:
        for row in json.loads((tmp_path / "runs" / n / "run.json").read_text())["tasks"]:
            built.setdefault((row["task"], row["key"]), 0)
            built[(row["task"], row["key"])] += not row["cached"]
    assert built and set(built.values()) == {1}, built  # every key built exactly once in all
