"""transformers without its per-call progress bars ("Loading weights", "Writing model shards"):
a render's console has one bar per shot (flows/console.py). For the models loaded through
transformers (engines/models/depth.py, engines/models/pose.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
