"""`cfg_batch`: the two classifier-free guidance passes of a step as one batched transformer
call, for pipelines that run them one after the other (Wan: a conditional call, then an
unconditional one with the same latents and timestep), without patching diffusers.

A thin wrapper takes the place of the transformer's `forward` on the loaded object (the way
diffusers' own hooks do). The pipeline's `encode_prompt` is wrapped too, to learn the step's
two text embeddings (the engine's `cfg_embeds(encoded) -> (cond, uncond)` picks them out of
what that pipeline's `encode_prompt` returns). Then, per step:
- the first call (conditional embeddings) runs once with a batch of two, unconditional rows
  first, conditional second (the order FasterCache and diffusers' batched pipelines use), every
  other batched input repeated; it returns the conditional half and keeps the other;
- the second call (the same latents and timestep objects, the unconditional embeddings) is
  served from what was kept, without running the model.
Any call that does not match that pattern runs as it was called.

One call of batch two instead of two of batch one: fewer kernel launches and weight reads per
step, about as many FLOPs, a little more activation memory. The numbers differ from the
sequential passes only by floating-point reassociation in kernels that block differently for
another batch size (measured on the CPU: tests/engines/test_diffusion.py); it is off by
default and part of the key as a setting.
FasterCache needs the passes batched (it approximates the unconditional half from the
conditional one), so `cache: faster` turns this on where the pipeline runs them apart.
"""

from __future__ import annotations

import functools
from typing import Any


def needed(engine: Any, settings: Any) -> bool:
    """Whether the wrapper runs: the engine's pipeline runs the passes apart (it does not
    declare CFG_BATCHED) and `cfg_batch` (or FasterCache, which needs it) is on."""
    return not getattr(engine, "CFG_BATCHED", False) and (settings.cfg_batch
                                                          or settings.cache == "faster")


def batched(engine: Any, settings: Any) -> bool:
    """Whether a step's transformer call carries both guidance rows (memory estimate)."""
    return getattr(engine, "CFG_BATCHED", False) or needed(engine, settings)


class CfgBatch:
    """The wrapper around one transformer's forward (module docstring)."""

    def __init__(self, model: Any):
        self.inner = model.forward  # the bound forward, with any diffusers hooks on it
        self.pair: tuple[Any, Any] | None = None  # (cond, uncond) text embeddings of this call
        self.kept: tuple[Any, Any, Any] | None = None  # (latents, timestep, uncond output)
        self.batched = self.served = 0  # calls run batched, calls served from `kept`
        model.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        x, e, t = (kwargs.get(k) for k in ("hidden_states", "encoder_hidden_states", "timestep"))
        pair, kept, self.kept = self.pair, self.kept, None
        if pair is None or args or x is None or e is None:
            return self.inner(*args, **kwargs)
        cond, uncond = pair
        if kept is not None and kept[0] is x and kept[1] is t and _same(e, uncond):
            self.served += 1
            return kept[2]
        if not _same(e, cond) or uncond.shape != cond.shape:
            return self.inner(*args, **kwargs)
        import torch

        n = x.shape[0]
        both = {k: torch.cat([v, v]) if torch.is_tensor(v) and v.ndim and v.shape[0] == n
                else v for k, v in kwargs.items()}
        both["encoder_hidden_states"] = torch.cat([uncond.to(e.device, e.dtype), e])
        out = self.inner(**both)
        self.batched += 1
        self.kept = (x, t, _rows(out, slice(0, n)))
        return _rows(out, slice(n, 2 * n))


def _same(a: Any, b: Any) -> bool:
    import torch

    return a is b or (a.shape == b.shape and torch.equal(a, b.to(a.device, a.dtype)))


def _rows(out: Any, rows: slice) -> Any:
    """The output (a tensor, a tuple whose first item is the sample, or a model output with
    `.sample`) cut to `rows` of its batch."""
    import torch

    if torch.is_tensor(out):
        return out[rows]
    if isinstance(out, tuple):
        return (out[0][rows], *out[1:])
    return type(out)(sample=out.sample[rows])


def install(pipe: Any, models: list[Any], engine: Any) -> list[CfgBatch]:
    """Wrap `models` (the pipeline's transformers) and its `encode_prompt`, whose result the
    engine's `cfg_embeds` turns into the (cond, uncond) pair; returns the wrappers."""
    wrappers = [CfgBatch(m) for m in models]
    original = pipe.encode_prompt

    @functools.wraps(original)
    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        encoded = original(*args, **kwargs)
        cond, uncond = engine.cfg_embeds(encoded)
        for w in wrappers:
            w.pair, w.kept = ((cond, uncond) if uncond is not None else None), None
        return encoded

    pipe.encode_prompt = encode_prompt
    return wrappers
