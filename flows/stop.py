"""`make stop`: end the open-ended shot that is rendering (engine `max_iterations: -1`), as a
Ctrl-C in its terminal would: after the frame in progress is committed, the shot ends, and the
render goes on to the export with the frames it has (tasks/stop.py).

`python -m flows.stop [runtime.cache_dir=/abs/cache]`: writes `<cache_dir>/STOP` (default:
`outputs/cache` in the repository, the cache `make render` uses). Every open-ended shot
rendering with that cache and started before it stops; shots started later ignore it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tasks.stop import write_stop_file

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    cache = ROOT / "outputs" / "cache"
    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("runtime.cache_dir", "cache_dir") and value:
            cache = Path(value).expanduser()
        elif arg.strip():
            print(f"error: {arg}: bad value; accepted: runtime.cache_dir=/abs/path (the cache of "
                  "the render to stop)", file=sys.stderr)
            return 2
    path = write_stop_file(cache)
    print(f"stop requested ({path}): the open-ended shot rendering with this cache ends after "
          "its frame in progress")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
