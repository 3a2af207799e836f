"""Overrides that try to run code, read the environment or change what Hydra runs are refused
before Hydra acts on any of them; text that merely looks like code stays text.

Three ways in, one check (flows/checks.py check_overrides): the command line (`cli`, before
`hydra.main`, which would instantiate callbacks and logging handlers before the job starts),
`compose_config` (tests, serving) and queued renders (`render_overrides`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.core.errors import ConfigError, PromptreelError
from flows.checks import check_overrides, launcher_keys, project_launchers
from flows.render import compose_config
from tests.helpers import run_cli

TARGETS = [  # `_target_` anywhere: a group, a nested key, inside a mapping value, Hydra's own
    "+_target_=os.system", "+engine._target_=subprocess.Popen", "+vqgan._target_=os.system",
    "+film.shots.0._target_=builtins.exec", "+film.shots.1.engine_overrides._target_=os.system",
    "+soundtrack._target_=os.system", "+runtime._target_=pathlib.Path.unlink",
    "+film.shots.0.engine_overrides={_target_: os.system, command: id}",
    "hydra.launcher._target_=hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "+hydra.sweeper._target_=os.system",
]
INTERPOLATIONS = [  # `${...}` anywhere, whatever the resolver, escaped or nested
    "film.name=${oc.env:USER,x}", "+film.shots.0.init_image=${oc.env:HOME}/.ssh/id_rsa.png",
    "film.shots.0.prompts='${oc.decode:\"{a: 1}\"}'", "seed=${oc.create:{a: 1}}",
    "film.shots.0.prompts=${oc.select:runtime.cache_dir}", "film.shots.0.prompts='${hydra:runtime.cwd}'",
    "film.shots.0.prompts='${now:%Y}'", "film.shots.0.prompts=${film.name}",
    "seed=${oc.env:${oc.env:VAR_NAME}}", "film.shots.0.prompts=\"\\${oc.env:HOME}\"",
    "film.shots.0.prompts='$${oc.env:HOME}'", "+film.shots.1.engine_overrides={lr: '${oc.env:LR}'}",
    "+film.shots.0.image_prompts=['${oc.env:HOME}/a.png']", "seed=1,${oc.env:HOME}",
    "hydra.sweeper.params.seed=${oc.env:HOME}", "hydra.run.dir=${oc.env:HOME}",
]
HYDRA = [  # launchers, callbacks and other Hydra settings that run code or write files
    "hydra/launcher=submitit_local", "hydra/launcher=basic", "+hydra/launcher=joblib",
    "hydra/launcher=../../evil", "~hydra/launcher", "hydra.launcher=submitit_local",
    "hydra.launcher.setup=['curl x | sh']", "hydra.launcher.python='bash -c id'",
    "hydra.launcher.submitit_folder=/tmp/pickles", "hydra.launcher.srun_args=[--pty]",
    "hydra/callbacks=log_job_return", "+hydra.callbacks.x.name=pwn",
    "~hydra.callbacks.sweep_summary", "++hydra.callbacks=null",
    "+hydra.job.env_set.LD_PRELOAD=/tmp/evil.so", "hydra.job.env_copy=[AWS_SECRET_ACCESS_KEY]",
    "+hydra.job_logging.handlers.x.class=logging.FileHandler",
    "hydra.job_logging.handlers.file.filename=/etc/cron.d/x", "hydra/job_logging=disabled",
    "hydra/hydra_logging=default", "hydra/sweeper=optuna", "hydra.searchpath=[file:///tmp/conf]",
    "hydra={}", "+engine@hydra.job_logging=pixel_clip", "+film@_global_.hydra=smoke",
]
ALLOWED = [  # what the docs tell users to write
    "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600",
    "hydra.launcher.mem_gb=64", "hydra.run.dir=/tmp/run", "hydra.sweep.dir=/tmp/sweep",
    "hydra.sweeper.params.seed=1,2", "hydra.mode=MULTIRUN", "hydra.job.chdir=false",
    "hydra/job_logging=promptreel", "hydra.job_logging.root.level=DEBUG", "+sweep=seeds",
    "film=smoke", "seed=1,2", "film.shots.0.prompts='a $HOME garden'",
]


@pytest.mark.parametrize("item", TARGETS + INTERPOLATIONS + HYDRA)
def test_refused_before_hydra_composes(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_overrides(["film=smoke", item])
    assert "override refused" in str(info.value)
    assert info.value.key == item.lstrip("+~").partition("=")[0]


@pytest.mark.parametrize("item", [TARGETS[3], INTERPOLATIONS[1], HYDRA[12], HYDRA[16]])
def test_compose_config_refuses_them_too(item: str) -> None:
    with pytest.raises(ConfigError, match="override refused"):
        compose_config(["film=smoke", item])


def test_queued_renders_refuse_them_before_any_work() -> None:
    """flows/serve.py's deployed flow calls render_overrides: refused before a flow starts."""
    from flows.render import render_overrides

    with pytest.raises(ConfigError, match="override refused"):
        render_overrides(["film=smoke", "+hydra.callbacks.x._target_=os.makedirs"])


@pytest.mark.parametrize("item", ALLOWED)
def test_the_projects_own_settings_pass(item: str) -> None:
    check_overrides([item])


def test_the_project_launcher_is_allowed_and_others_are_not() -> None:
    assert project_launchers() == ["slurm"]
    assert {"partition", "timeout_min", "gpus_per_node"} <= set(launcher_keys())
    assert not {"setup", "submitit_folder", "python", "srun_args"} & set(launcher_keys())
    check_overrides(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    try:  # composes where the plugin is installed; otherwise says how to install it
        compose_config(["film=smoke", "hydra/launcher=slurm"])
    except PromptreelError as exc:
        assert "refused" not in str(exc)
        assert str(exc).startswith("hydra/launcher: bad value 'slurm'; accepted: a launcher "
                                   "whose Hydra plugin is installed")
        assert "pip install -e '.[slurm]'" in str(exc)


@pytest.mark.parametrize("text", [
    "a $HOME $(id) `id`; rm -rf / && echo pwned",
    "a: b | c",
    "!!python/object/apply:os.system [id]",
    "[in]drawtext=text=%{pts}:x=1;[out] -y /tmp/x",
    "{a: 1, b: [2, 3]}",
    "$\\{oc.env:HOME}",  # backslash: not an interpolation to OmegaConf
    "\uff04{oc.env:HOME}",  # a fullwidth dollar sign
    "$ {oc.env:HOME}",
    "a _target at dawn",  # `_target_` is refused anywhere; `_target` is text
])
def test_text_that_looks_like_code_stays_text(text: str) -> None:
    quoted = "'" + text.replace("'", "\\'") + "'"  # Hydra's quoting; backslashes stay
    cfg = compose_config(["film=smoke", f"film.shots.0.prompts={quoted}"])
    assert cfg.film.shots[0].prompts == text
    assert os.environ.get("HOME", "/root") not in cfg.film.shots[0].prompts


def test_a_yaml_looking_prompt_is_two_weighted_prompts() -> None:
    from engines.planning.prompts import parse_prompts

    cfg = compose_config(["film=smoke", "film.shots.0.prompts='a: b | c'"])
    texts = [(p.text, p.weight) for p in parse_prompts(cfg.film.shots[0].prompts, key="p")]
    assert texts == [("a: b", 1.0), ("c", 1.0)]


@pytest.mark.parametrize(("item", "message"), [
    ("seed=$RANDOM", "seed: bad value '$RANDOM'; accepted: an integer; -1 draws a random seed"),
    ("film.name=$USER", "film.name: bad value '$USER'; accepted: a name of letters"),
    ("+film.shots.0.init_image=$HOME/x.png", "film.shots.0.init_image: bad value '$HOME/x.png'"),
])
def test_a_dollar_without_braces_is_not_expanded(item: str, message: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANDOM", "3")
    monkeypatch.setenv("USER", "alice")
    with pytest.raises(ConfigError) as info:
        compose_config(["film=smoke", item])
    assert str(info.value).startswith(message)


def test_the_command_line_refuses_before_hydra_acts(tmp_path: Path) -> None:
    """Each of these would act while Hydra starts (a logging handler opens its file, an env_set
    reaches ffmpeg, a callback is instantiated) if they got past the command line."""
    log, made = tmp_path / "clobbered.log", tmp_path / "made_by_callback"
    proc = run_cli(
        "film=smoke",
        "+hydra.job_logging.handlers.x.class=logging.FileHandler",
        f"+hydra.job_logging.handlers.x.filename={log}",
        f"+hydra.job.env_set.LD_PRELOAD={tmp_path / 'evil.so'}",
        "+hydra.callbacks.x._target_=os.makedirs", f"+hydra.callbacks.x.name={made}",
        cache=tmp_path / "cache", models=tmp_path / "models", run_dir=tmp_path / "run",
        check=False, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: hydra.job_logging.handlers.x.class: bad value 'logging.FileHandler'; accepted: "
        "hydra.run.dir, hydra.sweep.dir, hydra.sweep.subdir, hydra.mode, hydra.job.chdir|name|id"
        "|num, hydra.verbose, hydra.output_subdir, hydra.job_logging.root.level, "
        "hydra.sweeper.params.<key>, and the resource keys of conf/hydra/launcher/ as "
        "hydra.launcher.<key> (override refused: other Hydra settings can run code, set the "
        "environment or write files; edit conf/ instead)")
    assert not log.exists() and not made.exists()
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
