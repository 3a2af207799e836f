"""Memory that fits: estimate a render's peak memory before it starts, and fit a shot to a GPU.

How the estimate works: the engine's own `memory_step` (one step of its work: for the CLIP
engines one iteration of a one-frame shot: start latent or frame, loss, backward, optimiser
step) runs on *meta* copies of the loaded models (the engine's `meta_models`: shapes only, no
data, no arithmetic, no allocation) under a dispatch mode that adds the bytes of every tensor
storage an operation creates and subtracts them when the storage is freed. Its high-water mark is
the step's working memory, so the estimate follows the real code, whatever the architecture,
size and settings. Weights (parameters and buffers of the models) are counted apart, plus any
copies the engine declares (e.g. the bf16 casts autograd keeps under autocast).

Checked on this project's CPU against the growth of the resident set (docs/benchmarks.md,
tests/engines/test_memory.py); the CUDA figures are not yet checked on a GPU. cuDNN workspaces and
allocator fragmentation are not modelled: `fits` keeps a margin (HEADROOM, RESERVE_BYTES).

API (sizes are output pixels; memory in bytes; `engine` is an engine module, see
engines/frames/base.py):
- `MemoryTracer(engine, settings, models, device)`: meta copies built once; `.weights`,
  `.working(settings, width, height)` (memoised: the fit searches call it repeatedly).
- `estimate(engine, settings, width, height, models, device) -> Estimate`.
- `free_memory(device) -> int | None`: free bytes on a CUDA device, None elsewhere (no
  preflight on a CPU: the operating system pages instead of failing).
- `preflight(engine, settings, width, height, models, device, shot) -> (settings, note)`:
  unchanged settings when the step fits the free memory; with `settings.auto_fit` the engine's
  `fit` and a note saying what changed; otherwise `DeviceMemoryError` naming the largest size
  and the most units (`MEMORY_UNIT`) that would fit, plus the engine's own `memory_tips`.
- `out_of_memory(...)`: the `DeviceMemoryError` that replaces a `torch.cuda.OutOfMemoryError`
  raised mid-render (same suggestions).
- `live_bytes()`, `meta_clone(module)`, `meta_perceptors(...)`: the tracer and the model copiers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engines.core.errors import PromptreelError

log = logging.getLogger("promptreel")

HEADROOM = 1.10  # the estimate times this must fit (allocator rounding, fragmentation)
RESERVE_BYTES = 512 * 2 ** 20  # and this much must stay free (cuDNN workspaces, CUDA graphs)
GIB = 2 ** 30


class DeviceMemoryError(PromptreelError):
    """A shot does not fit the device's memory; the message says what would."""


@dataclass(frozen=True)
class Estimate:
    """Bytes: `weights` = the models' parameters and buffers; `working` = one iteration's peak
    on top of them (activations, gradients, optimiser state, temporaries)."""

    weights: int
    working: int

    @property
    def total(self) -> int:
        return self.weights + self.working


# ------------------------------------------------------------------------------ tracing
@lru_cache(maxsize=1)
def _live_bytes_class() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        """Counts the bytes of tensor storages created inside it (`live`) and their
        high-water mark (`peak`); storages that existed before (weights, inputs) and views of
        them are not counted."""

        def __init__(self) -> None:
            super().__init__()
            self.live = self.peak = 0
            self._refs: dict[int, Any] = {}

        def _free(self, key: int, size: int) -> None:
            self.live -= size
            self._refs.pop(key, None)

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            old = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0]
                   if isinstance(t, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor):
                    continue
                st = t.untyped_storage()  # one Python object per storage while it lives
                key = id(st)
                if key in old or key in self._refs:
                    continue
                size = st.nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                self._refs[key] = weakref.ref(st, lambda _r, k=key, n=size: self._free(k, n))
            return out

    return LiveBytes


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """While probing: `F.scaled_dot_product_attention` on meta tensors becomes the fused (flash)
    kernel that CPUs and GPUs run, which keeps no attention matrix for the backward pass; left
    alone, meta would take the math path and count one per layer. Other tensors are untouched.
    (A patch of torch.nn.functional's attribute: the function is composite, so no dispatch mode
    sees it, and a function mode would not see it inside nn.MultiheadAttention.)"""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
             is_causal: bool = False, scale: Any = None, enable_gqa: bool = False) -> Any:
        # torch's own parameter names: diffusers passes them by keyword
        if query.device.type != "meta" or enable_gqa:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                            is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def meta_autocast() -> Iterator[None]:
    """While probing: `torch.autocast("meta", ...)` (Mochi's rotary embedding autocasts on its
    input's device type) is a disabled CPU autocast instead of an error, and `torch.nonzero` on
    meta (Mochi's attention gathers the prompt's tokens by its mask) counts every element as
    non-zero, which is what the probe's all-ones masks hold; nothing else changes."""
    import torch
    from torch.fx.experimental import _config as fx_config

    original = torch.autocast

    class autocast(original):  # type: ignore[misc, valid-type]
        def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
            if device_type == "meta":
                device_type, kwargs = "cpu", {**kwargs, "enabled": False}
                args = args[:1]  # dtype only: `enabled` is now set by keyword
            super().__init__(device_type, *args, **kwargs)

    torch.autocast = autocast
    try:
        with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
            yield
    finally:
        torch.autocast = original


def live_bytes() -> Any:
    """A context manager (a torch dispatch mode) with `.live` and `.peak` bytes of the tensor
    storages created inside it; works on any device, and on "meta" nothing is allocated."""
    return _live_bytes_class()()


def meta_clone(module: Any, dtype: Any = None) -> Any:
    """A copy of `module` whose parameters and buffers are meta tensors (floating ones cast to
    `dtype` when given); costs no memory, whatever the model's size."""
    import torch

    memo: dict[int, Any] = {}
    for t in [*module.parameters(), *module.buffers()]:
        cast = dtype if dtype is not None and t.is_floating_point() else t.dtype
        m = torch.empty(t.shape, dtype=cast, device="meta")
        memo[id(t)] = (torch.nn.Parameter(m, requires_grad=t.requires_grad)
                       if isinstance(t, torch.nn.Parameter) else m)
    return copy.deepcopy(module, memo)


def nbytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def meta_perceptors(perceptors: list, bf16: bool) -> tuple[list, int, int]:
    """Meta copies of CLIP perceptors (bf16 when `bf16`), their weight bytes, and the bytes of
    the bf16 copies of their vision towers autograd keeps under autocast (0 without bf16)."""
    import torch

    dtype = torch.bfloat16 if bf16 else None
    meta = [dataclasses.replace(p, model=meta_clone(p.model, dtype), mean=p.mean.to("meta"),
                                std=p.std.to("meta")) for p in perceptors]
    weights = sum(nbytes(p.model) for p in perceptors)
    cast = sum(nbytes(p.model.visual) // 2 for p in perceptors) if bf16 else 0
    return meta, weights, cast


class MemoryTracer:
    """Meta copies of one shot's models, built once (the engine's `meta_models`);
    `working(settings, w, h)` runs the engine's `memory_step` on them (memoised)."""

    def __init__(self, engine: Any, settings: Any, models: dict[str, tuple], device: Any = "cuda"):
        import torch

        self.engine, self.name = engine, engine.NAME
        self.device = torch.device(device)
        self.meta, self.weights, self.cast = engine.meta_models(models, settings, self.device)
        self._memo: dict[tuple, int] = {}

    def working(self, settings: Any, width: int, height: int) -> int:
        """Peak bytes of one step on top of the weights."""
        key = (settings.model_dump_json(), width, height)
        if key not in self._memo:
            mode = live_bytes()
            with fused_attention(), meta_autocast(), mode:
                self.engine.memory_step(settings, width, height, self.meta, device="meta")
            self._memo[key] = mode.peak + self.cast
        return self._memo[key]


def estimate(engine: Any, settings: Any, width: int, height: int, models: dict[str, tuple],
             device: Any = "cuda") -> Estimate:
    """Peak memory of rendering width x height with these settings and models on `device`."""
    tracer = MemoryTracer(engine, settings, models, device)
    return Estimate(tracer.weights, tracer.working(settings, width, height))


# ------------------------------------------------------------------------------ fitting
def free_memory(device: Any) -> int | None:
    """Free bytes on a CUDA device (after releasing PyTorch's cached blocks); None elsewhere."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def fits(working: int, free: int) -> bool:
    """Whether an iteration needing `working` bytes fits in `free` bytes, with the margins."""
    return working * HEADROOM + RESERVE_BYTES <= free


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The largest x in [lo, hi] with ok(x), for ok true up to some point; None if ok(lo) fails."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def _scaled(width: int, height: int, units: int, step: int,
            multiple: int = 2) -> tuple[int, int]:
    """The size `units * step` pixels wide with the aspect of width x height (height a
    multiple of `multiple`)."""
    w = units * step
    return w, max(multiple, round(w * height / width / multiple) * multiple)


def hook(tracer: MemoryTracer, name: str) -> Callable | None:
    """An optional estimate hook: the engine module's, else one its `meta_models` put in the
    meta dict it returned (how engines sharing a subpackage share them: engines/frames/
    diffusion/memory.py), else None."""
    own = getattr(tracer.engine, name, None)
    if own is None and isinstance(tracer.meta, dict):
        own = tracer.meta.get(name)
    return own


def unit_count(tracer: MemoryTracer, settings: Any) -> int:
    """The settings' current count of MEMORY_UNIT (the hook `memory_count` where the setting
    may be left to the model, e.g. a diffusion engine's clip_frames: null)."""
    own = hook(tracer, "memory_count")
    return own(tracer, settings) if own is not None else getattr(
        settings, tracer.engine.MEMORY_UNIT[0])


def largest_count(tracer: MemoryTracer, settings: Any, width: int, height: int, free: int,
                  lowest: int = 1) -> int | None:
    """The most units (the engine's MEMORY_UNIT setting, below its current value, not below
    `lowest`, and one the engine allows: its `memory_counts`) that fit in `free` bytes at this
    size; None if none do."""
    field, _ = tracer.engine.MEMORY_UNIT
    allowed = hook(tracer, "memory_counts")
    current = unit_count(tracer, settings)
    counts = [n for n in (allowed(tracer, settings) if allowed is not None
                          else range(lowest, current)) if lowest <= n < current]
    best = _largest(0, len(counts) - 1, lambda i: fits(
        tracer.working(settings.model_copy(update={field: counts[i]}), width, height), free))
    return None if best is None else counts[best]


def suggestions(tracer: MemoryTracer, settings: Any, width: int, height: int, free: int) -> dict:
    """What would fit in `free` bytes: {"size": (w, h) with the same settings or None,
    "count": the most units (MEMORY_UNIT) at this size or None}. Sizes keep the aspect, both
    sides a multiple of the hook `memory_size_multiple(tracer)` where there is one (else width in
    steps of 16, height even)."""
    multiple = hook(tracer, "memory_size_multiple")
    multiple = multiple(tracer) if multiple is not None else None
    step = multiple or 16
    size_units = _largest(1, max(1, width // step), lambda u: fits(
        tracer.working(settings, *_scaled(width, height, u, step, multiple or 2)), free))
    return {"size": _scaled(width, height, size_units, step, multiple or 2) if size_units
            else None, "count": largest_count(tracer, settings, width, height, free)}


def fit(tracer: MemoryTracer, settings: Any, width: int, height: int, free: int) -> tuple[Any, str]:
    """Settings lowered (the engine's `fit`, or else fewer MEMORY_UNIT) until a step fits in
    `free` bytes, and what changed. Raises DeviceMemoryError when nothing fits."""
    fitter = getattr(tracer.engine, "fit", None)
    if fitter is not None:
        s, changes = fitter(tracer, settings, width, height, free)
    else:
        s, changes = settings, []
        if not fits(tracer.working(s, width, height), free):
            n = largest_count(tracer, s, width, height, free)
            if n is not None:
                field, _ = tracer.engine.MEMORY_UNIT
                s = s.model_copy(update={field: n})
                changes.append(f"{field}={n}")
    need = tracer.working(s, width, height)
    if not fits(need, free):
        raise DeviceMemoryError(
            f"{tracer.name} at {width}x{height} does not fit even after auto_fit "
            f"({', '.join(changes) or 'nothing left to lower'}): it needs about "
            f"{need / GIB:.1f} GiB, {free / GIB:.1f} GiB free (with a {HEADROOM:.0%} margin and "
            f"{RESERVE_BYTES // 2 ** 20} MiB reserve). What fits: "
            + _what_fits(tracer, s, width, height, free))
    return s, ", ".join(changes)


def _what_fits(tracer: MemoryTracer, settings: Any, width: int, height: int, free: int) -> str:
    """A smaller size that fits with these settings, or what the smallest one would need."""
    tips = suggestions(tracer, settings, width, height, free)
    if tips["size"]:
        return f"resolution {tips['size'][0]}x{tips['size'][1]} with these settings"
    multiple = hook(tracer, "memory_size_multiple")
    multiple = multiple(tracer) if multiple is not None else None
    small = _scaled(width, height, 1, multiple or 16, multiple or 2)
    floor = tracer.working(settings, *small)
    return (f"nothing on this device: even {small[0]}x{small[1]} needs about {floor / GIB:.1f} "
            f"GiB; a GPU with at least {(floor * HEADROOM + RESERVE_BYTES) / GIB:.1f} GiB free, "
            "or a smaller model")


def _message(tracer: MemoryTracer, settings: Any, width: int, height: int, free: int, need: int,
             shot: str, device: Any, what: str) -> str:
    field, noun = tracer.engine.MEMORY_UNIT
    count = unit_count(tracer, settings)
    tips = suggestions(tracer, settings, width, height, free)
    lines = [f"shot {shot!r}: {tracer.name} at {width}x{height} with {count} {noun} {what} "
             f"about {need / GIB:.1f} GiB of {device} memory per step on top of what is "
             f"loaded, and {free / GIB:.1f} GiB is free (with a {HEADROOM:.0%} margin and "
             f"{RESERVE_BYTES // 2 ** 20} MiB reserve)."]
    fitting = []
    if tips["size"]:
        w, h = tips["size"]
        fitting.append(f"resolution {w}x{h} at {count} {noun}")
    if tips["count"]:
        fitting.append(f"{width}x{height} at engine.{field}={tips['count']}")
    lines.append("  what fits: " + (" or ".join(fitting) if fitting else "nothing with these "
                                    "settings at this or a smaller size"))
    more = getattr(tracer.engine, "memory_tips", None)
    if more is not None:
        lines += [f"  {tip}" for tip in more(tracer, settings, width, height, free)]
    lines.append("  or set engine.auto_fit=true to lower the settings automatically")
    return "\n".join(lines)


def preflight(engine: Any, settings: Any, width: int, height: int, models: dict[str, tuple], *,
              device: Any, shot: str) -> tuple[Any, str | None]:
    """(settings to render with, a note of what auto_fit changed or None); raises
    DeviceMemoryError when the shot would not fit and auto_fit is off. Only on CUDA."""
    free = free_memory(device)
    if free is None:
        return settings, None
    tracer = MemoryTracer(engine, settings, models, device)
    need = tracer.working(settings, width, height)
    log.info("%s: memory estimate %.2f GiB per iteration (+ %.2f GiB of models), %.2f GiB free",
             shot, need / GIB, tracer.weights / GIB, free / GIB)
    if fits(need, free):
        return settings, None
    if settings.auto_fit:
        fitted, note = fit(tracer, settings, width, height, free)
        log.warning("%s: auto_fit to %.2f GiB free: %s", shot, free / GIB, note)
        return fitted, note
    raise DeviceMemoryError(_message(tracer, settings, width, height, free, need, shot, device,
                                     "needs"))


def out_of_memory(engine: Any, settings: Any, width: int, height: int,
                  models: dict[str, tuple], *, device: Any, shot: str) -> DeviceMemoryError:
    """The error that replaces a torch.cuda.OutOfMemoryError raised while rendering."""
    free = free_memory(device)
    tracer = MemoryTracer(engine, settings, models, device)
    need = tracer.working(settings, width, height)
    if free is None:
        return DeviceMemoryError(f"shot {shot!r}: {device} ran out of memory at {width}x{height}"
                                 f" (estimate {need / GIB:.1f} GiB per step)")
    return DeviceMemoryError("ran out of memory. " + _message(
        tracer, settings, width, height, free, need, shot, device, "needed"))
