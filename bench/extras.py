"""Benchmarks outside the default `make bench` run, each selected with
`python -m bench.run --only PART[,PART...]` (`make bench args="--only PART"`) and run in a fresh
process of its own:

- layouts: one VQGAN decoder forward+backward, contiguous against channels_last (the fast path's
  layout), best of `--reps` alternating rounds after a warm-up of each, in a fresh process that
  loads only the VQGAN (the default run times the same in its warm process, after the engines);
- checkpointing: what decoder checkpointing costs and saves, counted on meta copies of the real
  architectures (no timing): FLOPs of one vqgan_clip iteration
  (`torch.utils.flop_counter.FlopCounterMode` around the memory estimate's probe) and its working
  memory (`engines.frames.memory`), without and with `decoder_checkpointing`, per size;
- imports: seconds to import the render's heavy modules, each alone in a fresh interpreter
  (`python -X importtime -c "import M"`, the cumulative time of M; best of 3);
- compile: seconds per vqgan_clip iteration, eager against `compile: default` (torch.compile of
  decoder and perceptor): the first compiled iteration (compilation included), then the steady
  state, and after how many iterations compiling pays. Slow on a CPU: minutes of compilation.

`python -m bench.extras PART --out F.json [--device D] [--models DIR] [--vqgan N] [--clip N]
[--sizes WxH,...] [--cutn N] [--reps N] [--iters N]`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import common
from engines.core.device import pick_device

PARTS = ("layouts", "checkpointing", "imports", "compile")
IMPORTS = ("torch", "open_clip", "flows.render")  # the render's heavy imports


def _vqgan(name: str, device: str, models: Path | None) -> Any:
    from engines.models.loaded import load_model
    from engines.models.registry import load_entry

    return load_model(load_entry("vqgan", name, common.CONF), models or common.models_dir(),
                      device)


def layouts(a: argparse.Namespace) -> dict[str, Any]:
    from bench.engines import decoder_layouts

    size = int(a.sizes.split(",")[0].split("x")[0]) if a.sizes else 256
    vq = _vqgan(a.vqgan, a.device, a.models)
    return {"vqgan": a.vqgan, **decoder_layouts(vq, a.device, size, reps=a.reps)}


def checkpointing(a: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from engines.frames import memory
    from engines.frames import vqgan_clip as V

    sizes = (a.sizes or "640x360,1280x720").split(",")
    vq, perc = common.load(a.vqgan, a.clip, "cpu", a.models)
    rows = []
    for ckpt in (False, True):
        s = V.Settings(cutn=a.cutn, decoder_checkpointing=ckpt)
        tracer = memory.MemoryTracer(V, s, {"vqgan": (vq,), "clip": (perc,)}, device=a.device)
        for size in sizes:
            w, h = (int(v) for v in size.split("x"))
            with FlopCounterMode(display=False) as fc:
                working = tracer.working(s, w, h)
            rows.append({"size": size, "checkpointing": ckpt, "flops": fc.get_total_flops(),
                         "working": working})
    return {"models": f"{a.vqgan} + {a.clip}", "cutn": a.cutn, "device": a.device, "rows": rows}


def import_seconds(module: str, reps: int = 3) -> float:
    """Best cumulative seconds of `import module` in a fresh interpreter (-X importtime)."""
    best = float("inf")
    for _ in range(reps):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                              cwd=common.ROOT, capture_output=True, text=True, timeout=600,
                              env=common.child_env())
        if proc.returncode != 0:
            raise RuntimeError(f"import {module} failed:\n{proc.stderr[-2000:]}")
        found = [int(m.group(1)) for m in re.finditer(
            rf"^import time:\s+\d+ \|\s+(\d+) \| {re.escape(module)}$", proc.stderr, re.M)]
        best = min(best, found[-1] / 1e6)
    return best


def imports(a: argparse.Namespace) -> dict[str, Any]:
    return {"modules": {m: import_seconds(m, a.reps) for m in IMPORTS}, "reps": a.reps}


def compile_speed(a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from bench.engines import PROMPT, _Clock, _plan
    from engines.frames import vqgan_clip as V

    w, h = (int(v) for v in (a.sizes or "256x256").split(",")[0].split("x"))
    vq, perc = common.load(a.vqgan, a.clip, a.device, a.models)
    plan = _plan(w, h)
    out: dict[str, Any] = {"size": f"{w}x{h}", "cutn": a.cutn, "iters": a.iters,
                           "models": f"{a.vqgan} + {a.clip}", "prompt": PROMPT}
    for mode in ("none", "default"):
        s = V.Settings(cutn=a.cutn, compile=mode)
        run = V._Run(s, plan, vq, [perc], None, a.device, None)
        anchor = run.start_latent()
        z = anchor.clone().requires_grad_(True)
        opt = V._optimiser(s.optimiser, z, s.lr)
        prompts = plan.frames[0]  # the FramePlan: its prompts
        with _Clock(a.device) as first:
            run.step(z, opt, prompts, anchor)
        with _Clock(a.device) as steady:
            for _ in range(a.iters):
                run.step(z, opt, prompts, anchor)
        out[mode] = {"first_s": first.s, "per_iteration_s": steady.s / a.iters}
        torch._dynamo.reset()
    eager, comp = out["none"]["per_iteration_s"], out["default"]["per_iteration_s"]
    extra = out["default"]["first_s"] - out["none"]["first_s"]
    out["speedup"] = eager / comp
    out["pays_after"] = extra / (eager - comp) if comp < eager else None
    return out


RUN = {"layouts": layouts, "checkpointing": checkpointing, "imports": imports,
       "compile": compile_speed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=PARTS)
    ap.add_argument("--out", required=True, help="JSON file for the results")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", type=Path, default=None, help="models dir (default: the render's)")
    ap.add_argument("--vqgan", default=common.VQGAN)
    ap.add_argument("--clip", default=common.CLIP)
    ap.add_argument("--sizes", default=None, help="WxH,... (layouts, compile: the first only)")
    ap.add_argument("--cutn", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3, help="layouts: rounds; imports: runs")
    ap.add_argument("--iters", type=int, default=3, help="compile: timed iterations per mode")
    a = ap.parse_args(argv)
    a.device = pick_device(a.device)
    started = time.perf_counter()
    result = RUN[a.part](a)
    result["seconds"] = time.perf_counter() - started
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
