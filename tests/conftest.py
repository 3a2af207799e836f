"""Shared fixtures: generated tiny models in the published formats, built once per test session,
and a helper to run the real command line (`python -m flows.render ...`) in a subprocess. Before
anything else, tests/netguard.py cuts this process and every process it starts off the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import env
from tests import netguard
from tests.helpers import ROOT

netguard.install_everywhere()  # no test reaches the network, online or not (tests/netguard.py)
env.apply()  # the project's Prefect environment, before any test imports prefect

TINY_MODELS = [("vqgan", "generated_vqgan_f16_tiny"), ("clip", "generated_clip_tiny"),
               ("musicgen", "generated_musicgen_tiny"), ("cyclegan", "generated_cyclegan_tiny")]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny generated models (random weights, real file formats), materialised once."""
    from engines.models import registry, weights

    out = tmp_path_factory.mktemp("models")
    for kind, name in TINY_MODELS:
        weights.materialise_generated(registry.load_entry(kind, name, ROOT / "conf"), out)
    return out
