"""The torch device a render runs on: `runtime.device` (auto | cpu | cuda | cuda:N) resolved."""

from __future__ import annotations

from engines.core.errors import PromptreelError


def pick_device(requested: str = "auto") -> str:
    """"auto" -> "cuda" when a CUDA device is visible, else "cpu"; an explicit CUDA device that
    is not visible is an error naming the setting and the fix."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise PromptreelError(f"runtime.device={requested} but no CUDA device is visible; "
                              "use runtime.device=cpu or auto")
    return requested
