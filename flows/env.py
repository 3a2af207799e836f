"""The environment promptreel runs Prefect (and the libraries around it) with: one place.

`apply()` sets each default unless the caller's environment already sets it, and must run before
`prefect` is imported (Prefect reads its settings from the environment at import). Everything
that starts Prefect goes through it: `python -m flows.render`, `flows.serve`, `flows.prefect_server`
(`make server`), `python -m flows.env <command>` (`make worker`), the tests and the benchmarks.

    python -m flows.env                        # print the defaults as shell assignments
    python -m flows.env prefect worker start   # run a command with them
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, str] = {
    # Prefect's state (SQLite database, results, temporary server log) inside the project,
    # absolute, git-ignored; its default would be ~/.prefect
    "PREFECT_HOME": str(ROOT / ".prefect"),
    # no usage reports: the server's heartbeat off, and the client's telemetry off
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # seconds a temporary server may take to answer (2-core machines: 8-16 s, once over 20 s)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "INFO",
    # promptreel's own log lines outside a flow run (the sweep summary, written after the jobs'
    # flows) stay on the console; Prefect would warn that it cannot send them to its API
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    # Hugging Face tokenizers: no fork warning, no thread pool per process
    "TOKENIZERS_PARALLELISM": "false",
    # audiocraft imports dora, which imports submitit, whose logger module runs
    # logging.config.dictConfig at import unless told NOCONFIG: that closes and flushes every
    # handler already installed, Prefect's API log handler included, which waits for its queue to
    # drain (5 s measured with `python -X importtime` inside a render, 3 ms in a bare interpreter)
    "SUBMITIT_LOG_LEVEL": "NOCONFIG",
    # the hub stays offline: model downloads go through engines/models/weights.py only
    "HF_HUB_OFFLINE": "1",
}


def apply(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Set every default (and `extra`) that the environment does not set yet; return them all
    as they now are in `os.environ`."""
    wanted = {**DEFAULTS, **(extra or {})}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in wanted}


def main(argv: list[str]) -> None:
    values = apply()
    if not argv:
        for key, value in values.items():
            print(f"{key}={value}")
        return
    import shutil

    exe = shutil.which(argv[0], path=str(Path(sys.executable).parent) + os.pathsep
                       + os.environ.get("PATH", ""))
    if exe is None:
        print(f"error: command not found: {argv[0]}", file=sys.stderr)
        sys.exit(127)
    os.execv(exe, [exe, *argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
