"""Diffusion video engines: seconds per denoising step, FLOPs per step, the memory estimate.

- Every generated (tiny) diffusers entry of the registry whose family has an engine in
  engines/frames/registry.py (a new family with a tiny twin is benchmarked without editing this
  file): seconds per denoising step on this device, through the engine's own pipeline loader and
  call arguments, with the guidance passes apart and batched (`cfg_batch`), best of `reps`.
- Real-size Wan 2.1 T2V 1.3B at 832x480, 81 frames (bench/hollow.py: the published configs):
  FLOPs of one transformer forward, counted by torch's FlopCounterMode on meta tensors (no
  weights, no arithmetic: the same on any machine), and the memory estimate for each offload
  mode (engines/frames/diffusion/memory.py) against the Wan 2.1 README's 8.19 GB.
- On CUDA only: the same transformer with random bf16 weights, seconds per step (both guidance
  passes) apart and batched: the cfg_batch lever's ratio at real size.

`python -m bench.diffusion [--device cpu|cuda] [--steps N] [--models DIR] [--skip-real]
--out FILE.json`; bench/run.py runs it as the `diffusion` part.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench import common

WAN_SIZE = (832, 480, 81)  # Wan 2.1 1.3B's native 480p clip
TEXT_LEN = 512  # Wan's max_sequence_length


def tiny_entries() -> list[tuple[Any, Any]]:
    """(registry entry, engine module) of every generated diffusers entry an engine runs from
    text alone (image-only twins need a start image the bench does not make)."""
    from engines.frames.diffusion.rules import needs_image
    from engines.frames.registry import ENGINES
    from engines.models.diffusers import rules_of
    from engines.models.registry import list_entries, load_entry

    families = {getattr(m, "FAMILY", None): m for m in ENGINES.values()}
    out = []
    for name in list_entries("diffusers", common.CONF):
        entry = load_entry("diffusers", name, common.CONF)
        engine = families.get(rules_of(entry).family)
        if entry.source == "generated" and engine is not None and not needs_image(
                rules_of(entry)):
            out.append((entry, engine))
    return out


def step_seconds(entry: Any, engine: Any, device: str, models: Path, steps: int,
                 reps: int = 2) -> dict[str, Any]:
    """Seconds per denoising step of one chunk at the entry's own size and clip length (the
    step callback's timestamps; the first step, which warms up, is not counted)."""
    from engines.frames.diffusion import pipeline as loader
    from engines.models.loaded import load_model

    source = load_model(entry, models)
    rules = source.rules
    row: dict[str, Any] = {"entry": entry.name, "engine": engine.NAME, "size":
                           f"{rules.width}x{rules.height}", "frames": rules.clip_frames}
    # cfg_batch applies where the engine can split the pipeline's prompt embeddings
    # (`cfg_embeds`); the others run their pipeline's own way (already one batch, or one pass)
    for batched in (False, True) if hasattr(engine, "cfg_embeds") else (False,):
        settings = engine.Settings(model=entry.name, cfg_batch=batched, steps=steps)
        pipe = loader.load(source, settings, device, engine=engine)
        kwargs = engine.call_kwargs(settings, rules, rules.clip_frames, rules.width,
                                    rules.height, "a garden of flowers", "", None)
        best = float("inf")
        for _ in range(reps):
            stamps: list[float] = []

            def on_step(p: Any, i: int, t: Any, tensors: dict, stamps: list = stamps) -> dict:
                common.sync(device)
                stamps.append(time.perf_counter())
                return {}

            import inspect

            import torch

            if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
                hook = {"callback_on_step_end": on_step}
            else:  # legacy callback (TextToVideoSDPipeline)
                hook = {"callback": lambda i, t, lat: on_step(None, i, t, {}), "callback_steps": 1}
            pipe(**kwargs, num_inference_steps=steps, output_type="latent",
                 generator=torch.Generator("cpu").manual_seed(0), **hook)
            best = min(best, (stamps[-1] - stamps[0]) / (len(stamps) - 1))
        row["batched_s" if batched else "apart_s"] = best
    row["ratio"] = row["apart_s"] / row["batched_s"] if "batched_s" in row else None
    return row


def wan_real(device: str) -> dict[str, Any]:
    """FLOPs per transformer forward and the memory estimate of real-size Wan 2.1 1.3B."""
    import tempfile

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.hollow import hollow_folder, meta_components
    from engines.frames import memory, wan
    from engines.models.diffusers import PipelineSource, rules_of
    from engines.models.registry import load_entry

    w, h, f = WAN_SIZE
    transformer = meta_components("wan")["transformer"].to(torch.bfloat16)
    latent = torch.empty(1, 16, (f - 1) // 4 + 1, h // 8, w // 8, dtype=torch.bfloat16,
                         device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        transformer(**wan.transformer_inputs(transformer, latent, TEXT_LEN, "meta"))
    out: dict[str, Any] = {"size": f"{w}x{h}x{f}", "flops_forward": counter.get_total_flops()}
    entry = load_entry("diffusers", "wan2_1_t2v_1_3b", common.CONF)
    with tempfile.TemporaryDirectory() as tmp:
        src = PipelineSource(entry.name, hollow_folder("wan", Path(tmp) / "wan"),
                             rules_of(entry))
        s = wan.Settings()
        tracer = memory.MemoryTracer(wan, s, {"diffusers": (src,)}, "cuda")
        out["weights"] = tracer.weights
        out["published_gib"] = rules_of(entry).vram_gib
        out["estimate"] = {f"{o}, tiling {t}": tracer.working(
            s.model_copy(update={"offload": o, "vae_tiling": t}), w, h)
            for o, t in (("none", "off"), ("model", "off"), ("group", "off"), ("group", "on"))}
    if device == "cuda":
        out["gpu"] = wan_gpu_levers(transformer.config, latent.shape)
    return out


def wan_gpu_levers(config: Any, shape: tuple, reps: int = 3) -> dict[str, float]:
    """On CUDA: the real-size transformer with random bf16 weights; seconds of both guidance
    passes per step, as two calls and as one batch of two (cfg_batch)."""
    import diffusers
    import torch

    from engines.frames import wan

    torch.manual_seed(0)
    model = diffusers.WanTransformer3DModel.from_config(config).to("cuda", torch.bfloat16).eval()
    one = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    two = torch.cat([one, one])

    def timed(x: Any, calls: int) -> float:
        best = float("inf")
        for _ in range(reps + 1):  # the first is a warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                for _ in range(calls):
                    model(**wan.transformer_inputs(model, x, TEXT_LEN, "cuda"))
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    apart, batched = timed(one, 2), timed(two, 1)
    return {"apart_s": apart, "batched_s": batched, "ratio": apart / batched}


def run(device: str, models: Path | None, steps: int, real: bool = True) -> dict[str, Any]:
    models = models or common.models_dir()
    rows = [step_seconds(e, m, device, models, steps) for e, m in tiny_entries()]
    return {"device": device, "steps": steps, "tiny": rows,
            "wan_real": wan_real(device) if real else None}


def markdown(d: dict[str, Any]) -> str:
    from bench.common import GB, GIB, table

    out = [f"Seconds per denoising step on {d['device']} (tiny random-weight twins at their "
           f"own size and clip length, {d['steps']} steps, the first not counted, best of 2; "
           "guidance passes as two transformer calls and as one batch, `engine.cfg_batch`):", "",
           table(["entry", "engine", "size x frames", "s/step apart", "s/step batched",
                  "apart/batched"],
                 [[r["entry"], r["engine"], f"{r['size']}x{r['frames']}", f"{r['apart_s']:.4f}",
                   f"{r['batched_s']:.4f}" if r.get("batched_s") else "its own way",
                   f"{r['ratio']:.2f}x" if r.get("ratio") else "-"] for r in d["tiny"]])]
    real = d.get("wan_real")
    if real:
        est = real["estimate"]
        out += ["", f"Wan 2.1 T2V 1.3B at {real['size']} (real configs, no weights: "
                f"bench/hollow.py): one transformer forward = {real['flops_forward'] / 1e12:.1f}"
                f" TFLOP (FlopCounterMode on meta), {2 * real['flops_forward'] / 1e12:.1f} TFLOP "
                f"per step with guidance; weights {real['weights'] / GIB:.2f} GiB (bf16, VAE "
                "fp32). Memory estimate of one chunk (weights on the device included):", "",
                table(["offload, VAE tiling", "estimate GiB", "estimate GB"],
                      [[k, f"{v / GIB:.2f}", f"{v / GB:.2f}"] for k, v in est.items()]), "",
                f"Published: {real['published_gib']} GB with offloading on an RTX 4090 "
                "(Wan 2.1 README)."]
        gpu = real.get("gpu")
        out += ["", (f"GPU, random bf16 weights, both guidance passes of one step: apart "
                     f"{gpu['apart_s']:.3f} s, batched {gpu['batched_s']:.3f} s "
                     f"({gpu['ratio']:.2f}x).") if gpu else
                "GPU section (real-size step time, cfg_batch ratio): not measured, no CUDA "
                "device in this run."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--models", default=None)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    d = run(a.device, Path(a.models) if a.models else None, a.steps, real=not a.skip_real)
    Path(a.out).write_text(json.dumps(d, indent=2))


if __name__ == "__main__":
    main()
