"""Concurrency: two renders of the same config started at once on one cache (two processes)
make one correct result: each artefact is built by exactly one of them (the other waits on the
key's lock, or takes the other shot first, then reuses it), both exit 0 with the reference
video, and no artefact is ever seen half-made (nothing quarantined, every key verifies)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import read_run
from tests.reliability.conftest import (
    SMOKE,
    Reference,
    assert_same_artefacts,
    built,
    reap,
    render_argv,
    sha256,
    start,
    verify_all,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("pair")
    cache = base / "cache"
    procs = [start(render_argv(*SMOKE, cache=cache, models=reference.models,
                               run_dir=base / f"run{i}"), base / f"run{i}.log") for i in (1, 2)]
    rcs = [reap(p) for p in procs]
    logs = [(base / f"run{i}.log").read_text(errors="replace") for i in (1, 2)]
    assert rcs == [0, 0], "\n\n".join(x[-3000:] for x in logs)
    return {"cache": cache, "records": [read_run(base / f"run{i}") for i in (1, 2)],
            "logs": logs}


def test_both_finish_with_the_reference_video(pair: dict, reference: Reference) -> None:
    assert [sha256(Path(r["video"])) for r in pair["records"]] == [reference.video_sha] * 2
    assert all("Traceback" not in log for log in pair["logs"])


def test_each_artefact_is_built_by_exactly_one_of_them(pair: dict, reference: Reference) -> None:
    first, second = (built(r) for r in pair["records"])
    assert first.isdisjoint(second)
    assert first | second == built(reference.record)  # and all of it, once
    for mine, record in zip((first, second), reversed(pair["records"]), strict=True):
        hits = {(t["task"], t["key"]) for t in record["tasks"] if t["cached"]}
        assert mine <= hits  # what one built, the other reused


def test_no_artefact_is_corrupt_or_left_half_made(pair: dict, reference: Reference) -> None:
    cache: Path = pair["cache"]
    assert verify_all(cache) == len(reference.files)
    assert_same_artefacts(cache, reference)
    assert [p for p in cache.glob("*/*") if p.name.endswith((".work", ".corrupt"))] == []
    assert all("corrupt artefact" not in log for log in pair["logs"])
