"""Resume in the middle of denoising, with diffusers' pipelines unpatched.

While a chunk denoises, a `callback_on_step_end` hands the latents after step k to the engine,
which stores them every `checkpoint_every` steps with the scheduler's running state (the model
outputs a multistep solver keeps, its counters) and the random generator's state. To resume at
step k the pipeline is called again with `latents=` and a copy of the scheduler whose
`set_timesteps` computes the whole schedule, keeps only the remaining timesteps (and sigmas), and
puts the saved running state back. Its method signatures are the original ones
(`functools.wraps`): pipelines inspect them for `timesteps=`, `sigmas=`, `generator=`.

Exactness on the CPU (resumed frames equal uninterrupted ones, bit for bit):
- FlowMatchEulerDiscreteScheduler (LTX-Video, HunyuanVideo, Mochi), DDIMScheduler and
  CogVideoXDDIMScheduler (zeroscope, CogVideoX-2B): exact from the latents alone;
- UniPCMultistepScheduler (Wan) and DPMSolverMultistepScheduler: exact with their running state
  (model outputs, lower-order counters) saved too, which `scheduler_state` does;
- CogVideoXDPMScheduler (CogVideoX-5B's default) keeps part of its state in a variable of the
  pipeline's loop that no callback can read: a resume of such a chunk starts the chunk over
  (`MID_CHUNK_EXACT`), committed chunks are never redone;
- with a step cache on (First Block Cache, FasterCache, PAB) the cache's own state is lost at a
  kill: such chunks start over too.
"""

from __future__ import annotations

import functools
from typing import Any

# running state of the schedulers diffusers ships (attributes that change as steps are taken);
# everything else is the schedule, recomputed by set_timesteps
RUNNING = ("model_outputs", "timestep_list", "lower_order_nums", "last_sample", "this_order",
           "prev_derivative", "dt", "sample", "ets", "counter", "cur_model_output", "cur_sample",
           "_previous_timestep")
MID_CHUNK_EXACT = {"FlowMatchEulerDiscreteScheduler", "DDIMScheduler", "CogVideoXDDIMScheduler",
                   "UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
                   "PNDMScheduler"}


def _plain(value: Any) -> bool:
    import torch

    if value is None or isinstance(value, (bool, int, float, torch.Tensor)):
        return True
    return isinstance(value, (list, tuple)) and all(_plain(v) for v in value)


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """The scheduler's running state, as tensors and numbers on the CPU (torch.save-able with
    weights_only loading)."""
    import torch

    def cpu(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().to("cpu").clone()
        if isinstance(v, (list, tuple)):
            return [cpu(x) for x in v]
        return v

    return {k: cpu(v) for k, v in vars(scheduler).items() if k in RUNNING and _plain(v)}


def resumed(scheduler: Any, done: int, state: dict[str, Any] | None) -> Any:
    """A scheduler like `scheduler` (same class and config) whose schedule, as the pipeline
    sees it, starts after `done` steps, with `state` (from `scheduler_state`) as its running
    state. Two views: between calls the pipeline reads the remaining timesteps and sigmas (its
    loop runs only the steps left); inside `step` and `scale_model_input` the scheduler sees its
    whole schedule and an absolute step index, so solvers whose arithmetic depends on the step's
    position (UniPC's corrector from the second step on) compute exactly what an uninterrupted
    run computes."""
    import torch

    base = type(scheduler)
    saved = dict(state or {})

    class Resumed(base):  # type: ignore[valid-type, misc]
        @functools.wraps(base.set_timesteps)
        def set_timesteps(self, *args: Any, **kwargs: Any) -> Any:
            out = base.set_timesteps(self, *args, **kwargs)
            sigmas = getattr(self, "sigmas", None)
            self._whole = (self.timesteps, sigmas)
            self.timesteps = self.timesteps[done:]
            if isinstance(sigmas, torch.Tensor):
                self.sigmas = sigmas[done:]
            device = self.timesteps.device
            for k, v in saved.items():
                setattr(self, k, _to(v, device))
            return out

        def set_begin_index(self, begin_index: int = 0) -> None:
            base.set_begin_index(self, begin_index + done)

        def _whole_view(self, method: Any, *args: Any, **kwargs: Any) -> Any:
            view = (self.timesteps, getattr(self, "sigmas", None))
            self.timesteps, sigmas = self._whole
            if sigmas is not None:
                self.sigmas = sigmas
            try:
                return method(self, *args, **kwargs)
            finally:
                self.timesteps = view[0]
                if view[1] is not None:
                    self.sigmas = view[1]

        @functools.wraps(base.step)
        def step(self, *args: Any, **kwargs: Any) -> Any:
            return self._whole_view(base.step, *args, **kwargs)

        if hasattr(base, "scale_model_input"):  # flow-matching schedulers have none
            @functools.wraps(base.scale_model_input)
            def scale_model_input(self, *args: Any, **kwargs: Any) -> Any:
                return self._whole_view(base.scale_model_input, *args, **kwargs)

    Resumed.__name__ = Resumed.__qualname__ = base.__name__
    return Resumed.from_config(scheduler.config)


def _to(value: Any, device: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value


def fresh(scheduler: Any) -> Any:
    """A new scheduler of the same class and config (no running state)."""
    return type(scheduler).from_config(scheduler.config)
