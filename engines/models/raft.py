"""RAFT optical flow (Teed and Deng 2020, arXiv:2003.12039) as torchvision ships it: the flow
model of the flow_restyle engine. Registry kind `flow`, entries `conf/flow/<name>.yaml`:

- `source: url`: torchvision's published weights (`raft_large_C_T_SKHT_V2`, `raft_small_C_T_V2`,
  the `.pth` files torchvision's `Raft_*_Weights` download). A `.pth` is a pickle: it is never
  loaded as it is. `after_fetch` checks the sha256 prefix torchvision puts in the file name (as
  torchvision's own `check_hash` does) and converts the state dict once to safetensors with the
  restricted unpickler of engines/models/safe_ckpt.py; the safetensors is what is loaded.
- `source: generated`: a randomly initialised RAFT (`arch.model`: raft_small or raft_large),
  saved as safetensors, for tests (its flow is noise, but it runs the same code).

`load` returns the model in eval mode on the device. `arch.model` names the torchvision builder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError, MissingWeightsError

WEIGHTS_FILE = "raft.safetensors"
MODELS = ("raft_small", "raft_large")


def _builder(entry: Any) -> Any:
    from torchvision.models import optical_flow

    model = (entry.arch or {}).get("model")
    if model not in MODELS:
        raise ConfigError(f"conf/flow/{entry.name}.yaml:arch.model", model, ", ".join(MODELS))
    return getattr(optical_flow, model)


def build_generated(entry: Any, out_dir: Path) -> None:
    """A randomly initialised RAFT (deterministic from entry.seed) as safetensors."""
    import torch
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        model = _builder(entry)(weights=None, progress=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(Path(out_dir) / WEIGHTS_FILE))


def after_fetch(entry: Any, files: dict[str, Path], *, download: bool = False) -> None:
    """A downloaded torchvision `.pth`: its sha256 prefix checked (the 8 hex digits torchvision
    puts after the last '-' in the name), then converted once to safetensors, safely."""
    from engines.models.safe_ckpt import convert_ckpt

    for name, path in files.items():
        if not name.endswith(".pth"):
            continue
        out = Path(path).with_name(WEIGHTS_FILE)
        if out.is_file() and out.stat().st_mtime_ns >= Path(path).stat().st_mtime_ns:
            continue
        prefix = re.search(r"-([0-9a-f]{8,})\.pth$", name)
        if prefix:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            if not digest.startswith(prefix.group(1)):
                raise MissingWeightsError(
                    f"flow model {entry.name!r}: {path} has sha256 {digest}, which does not start "
                    f"with {prefix.group(1)} as torchvision's file name says; delete it and fetch "
                    "it again (`make fetch-models conf=<your preset>`)")
        convert_ckpt(Path(path), out)


def load(entry: Any, folder: Path, device: Any = "cpu") -> Any:
    """The RAFT model of a prepared entry, eval mode, on `device`."""
    from safetensors.torch import load_file

    model = _builder(entry)(weights=None, progress=False)
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    return model.eval().to(device)
