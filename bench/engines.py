"""Engine speed per engine and size: iterations/s (fast and reference side by side), frames/s,
FLOPs per iteration and their share of the device's peak, peak memory.

Models: the real architectures with generated random weights (`generated_vqgan_f16_16384`,
`generated_clip_vit_b_32`): speed does not depend on weight values. Each case builds the
engine's own `_Run` and times its iteration (`_Run.step` for vqgan_clip, `_Run.optimise` for
pixel_clip), exactly the code a render runs, without the frame commits; the commit (decode,
CLIP score, PNG, state) is timed once per case through the real `DirectorySink`, and
frames/s = 1 / (iterations per frame / iterations/s + commit seconds), with 10 iterations a
frame (klee_garden's images_interval, the pixel engine's default).

FLOPs: `torch.utils.flop_counter.FlopCounterMode` around the first (warm-up) iteration of the
fast path. Achieved FLOP/s = FLOPs x iterations/s; the peak is `common.peak_flops`. Memory: the
process's resident-set high-water mark during the case (reset before it; weights included), or
torch.cuda.max_memory_allocated on CUDA. Cases run in one process, smallest first.

`python -m bench.engines --out rows.json [--device cpu] [--sizes ...]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench import common
from engines.core.device import pick_device

PROMPT = "Garden full of flowers and plants in Paul Klee style"
PER_FRAME = 10  # iterations per frame for frames/s
CPU_SIZES = ("256x256", "640x360")  # vqgan_clip on a CPU: minutes per iteration beyond these
CUDA_SIZES = ("256x256", "640x360", "1280x720")
PIXEL_EXTRA = "1280x720"  # pixel_clip costs the same at any size on a CPU (CLIP-bound), and its
# commit at 1280x720 (PNG of a noisy frame, state) bounds real-time frames/s on any GPU


def _plan(w: int, h: int, frames: int = 2) -> Any:
    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    return ShotPlan("bench", w, h, 12.0, 0, (FramePlan((Prompt(PROMPT),)),) * frames)


class _Clock:
    """Wall seconds of a block (`.s`), the device synchronised on both sides."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> _Clock:
        common.sync(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        common.sync(self.device)
        self.s = time.perf_counter() - self.t0


def _counts(device: str) -> dict[str, int]:
    """Timed iterations per engine and path: few on a CPU (minutes per case), more on a GPU."""
    if device.startswith("cuda"):
        return {"warm": 5, "vq_fast": 50, "vq_ref": 10, "px_fast": 100, "px_ref": 20}
    return {"warm": 1, "vq_fast": 2, "vq_ref": 2, "px_fast": 5, "px_ref": 5}  # under 10 min


class _Memory:
    """Peak memory of a block: resident-set high-water mark (CPU) or max allocated (CUDA)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self) -> _Memory:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            common.reset_peak()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        self.peak = torch.cuda.max_memory_allocated() if self.cuda else common.rss()["VmHWM"]


def vqgan_case(w: int, h: int, vq: Any, perc: Any, device: str, n: dict[str, int]) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engines.frames import vqgan_clip as V
    from tasks.frame_sink import DirectorySink

    plan = _plan(w, h)
    prompts = plan.frames[0]  # the FramePlan: its prompts
    out: dict[str, Any] = {"engine": V.NAME, "size": f"{w}x{h}", "cutouts": 32}
    with _Memory(device) as mem:
        for path in ("fast", "reference"):
            s = V.Settings(cutn=32, images_interval=PER_FRAME, path=path)
            run = V._Run(s, plan, vq, [perc], None, device, None)
            anchor = run.start_latent()
            z = anchor.clone().requires_grad_(True)
            opt = V._optimiser(s.optimiser, z, s.lr)
            if path == "fast":
                with FlopCounterMode(display=False) as fc:
                    run.step(z, opt, prompts, anchor)
                out["flops"] = fc.get_total_flops()
                for _ in range(n["warm"] - 1):
                    run.step(z, opt, prompts, anchor)
            k = n["vq_fast" if path == "fast" else "vq_ref"]
            with _Clock(device) as clock:
                for _ in range(k):
                    run.step(z, opt, prompts, anchor)
            out[f"{path}_its"] = k / clock.s
            if path == "fast":
                out["canvas"] = f"{run.cw}x{run.ch}"
                with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), _Clock(device) as c:
                    run.sink = DirectorySink(Path(tmp))
                    run.commit(run.colour(run.vq.synth(z)), 0, {"z": z.detach().cpu()})
                out["commit_s"] = c.s
    out["peak_bytes"] = mem.peak
    return out


def pixel_case(w: int, h: int, perc: Any, device: str, n: dict[str, int]) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from engines.frames import pixel_clip as P
    from tasks.frame_sink import DirectorySink

    plan = _plan(w, h)
    prompts = plan.frames[1].prompts
    out: dict[str, Any] = {"engine": P.NAME, "size": f"{w}x{h}", "canvas": f"{w}x{h}",
                           "cutouts": 4}
    with _Memory(device) as mem:
        for path in ("fast", "reference"):
            s = P.Settings(iterations_per_frame=PER_FRAME, path=path)
            run = P._Run(s, plan, [perc], None, device, None)
            targets = run.frame_targets(prompts)
            start, ref = run.next_start(run.first(), plan.frames[1])
            if path == "fast":
                with FlopCounterMode(display=False) as fc:
                    run.optimise(start, ref, targets, 1)
                out["flops"] = fc.get_total_flops()
                run.optimise(start, ref, targets, max(0, n["warm"] - 1))
            k = n["px_fast" if path == "fast" else "px_ref"]
            with _Clock(device) as clock:
                frame, text, stable = run.optimise(start, ref, targets, k)
            out[f"{path}_its"] = k / clock.s
            if path == "fast":
                with tempfile.TemporaryDirectory() as tmp, _Clock(device) as c:
                    run.sink = DirectorySink(Path(tmp))
                    run.commit(frame, 0, prompts, text, stable)
                out["commit_s"] = c.s
    out["peak_bytes"] = mem.peak
    return out


def finish(row: dict, peak: float) -> dict:
    """Derived columns: fast/reference, frames/s, achieved FLOP/s and share of the peak."""
    row["ratio"] = row["fast_its"] / row["reference_its"]
    row["frames_s"] = 1 / (PER_FRAME / row["fast_its"] + row["commit_s"])
    row["flops_s"] = row["flops"] * row["fast_its"]
    row["peak_share"] = row["flops_s"] / peak
    return row


def bf16_effect(device: str, models: Path | None = None, size: int = 128) -> dict[str, float]:
    """Loss and gradient of one vqgan_clip iteration in fp32 against bf16 autocast, same latent
    and cutouts. CPU: tiny generated models under CPU autocast (bf16 is emulated here, too slow
    for the real sizes); CUDA: the real architectures, fast path (bf16) against reference."""
    import torch

    from engines.frames import vqgan_clip as V

    cuda = device.startswith("cuda")
    vq, perc = (common.load(common.VQGAN, common.CLIP, device, models) if cuda else
                common.load("generated_vqgan_f16_tiny", "generated_clip_tiny", device, models))
    out = []
    for bf16 in (False, True):
        s = V.Settings(cutn=8, path="fast" if bf16 or not cuda else "reference")
        plan = _plan(size, size)
        run = V._Run(s, plan, vq, [perc], None, device, None)
        run.guide.set_prompts(plan.frames[0].prompts)
        z = run.start_latent().requires_grad_(True)
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16) if not cuda
               else torch.autocast("cuda", enabled=False) if not bf16 else nullcontext())
        with torch.enable_grad(), ctx:
            loss, _ = run.guide.loss(run.vq.synth(z), 0)
        loss.backward()
        out.append((loss.item(), z.grad.flatten().float()))
    (l32, g32), (l16, g16) = out
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)),
            "models": "real architectures" if cuda else "tiny generated", "size": size}


def run_all(device: str, sizes: tuple[str, ...], models: Path | None = None,
            vqgan: str = common.VQGAN, clip: str = common.CLIP, full: bool = True) -> dict:
    """Every case; `full` = the default sizes (adds pixel_clip at PIXEL_EXTRA, decoder layouts
    at 256x256)."""
    import torch

    peak, how = common.peak_flops(device)
    n = _counts(device)
    vq, perc = common.load(vqgan, clip, device, models)
    rows = []
    for size in dict.fromkeys((*sizes, PIXEL_EXTRA) if full else sizes):
        w, h = (int(v) for v in size.split("x"))
        rows.append(finish(pixel_case(w, h, perc, device, n), peak))
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        rows.append(finish(vqgan_case(w, h, vq, perc, device, n), peak))
    return {"device": common.device_name(device), "device_kind": device, "peak_flops": peak,
            "peak_how": how, "threads": torch.get_num_threads(), "counts": n, "rows": rows,
            "bf16": bf16_effect(device, models),
            "layouts": decoder_layouts(vq, device, 256 if full else 64)}


def decoder_layouts(vq: Any, device: str, size: int, reps: int = 2) -> dict[str, float]:
    """Best seconds of one VQGAN decoder forward+backward at size x size, contiguous against
    channels_last (the fast path's layout), alternating `reps` times after a warm-up of each;
    the model is left in the layout it had."""
    import torch

    z0 = torch.randn(1, vq.post_quant_conv.in_channels, size // 16, size // 16, device=device)
    was = (torch.channels_last if next(vq.decoder.parameters()).is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format)
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    best = dict.fromkeys(formats, float("inf"))
    for rep in range(reps + 1):
        for name, fmt in formats.items():
            vq.to(memory_format=fmt)
            z = z0.contiguous(memory_format=fmt).requires_grad_(True)
            with torch.enable_grad(), _Clock(device) as clock:
                vq.decode(z).sum().backward()
            if rep:  # the first round is the warm-up
                best[name] = min(best[name], clock.s)
    vq.to(memory_format=was)
    return {"size": size, "reps": reps, **best}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", default=None, help="WxH,... (default: 256x256,640x360 on a "
                    "CPU, plus 1280x720 on CUDA)")
    ap.add_argument("--models", default=None)
    ap.add_argument("--vqgan", default=common.VQGAN)
    ap.add_argument("--clip", default=common.CLIP)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    sizes = tuple(a.sizes.split(",")) if a.sizes else (
        CUDA_SIZES if device.startswith("cuda") else CPU_SIZES)
    result = run_all(device, sizes, Path(a.models) if a.models else None, a.vqgan, a.clip,
                     full=not a.sizes)
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
