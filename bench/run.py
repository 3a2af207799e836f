"""`make bench`: run every benchmark, print the tables and append them to docs/benchmarks.md.

Parts (each in its own process, so one part's memory never skews another's):
1. bench.engines: speed, FLOPs and memory per engine and size (CPU: 256x256 and 640x360;
   CUDA: also 1280x720), and the bf16 loss difference;
2. bench.memcheck: the memory estimate against measured memory at three sizes (vqgan_clip,
   real architectures, 32 cutouts), plus the estimate at the sizes of published GPU figures;
3. bench.pipeline: a smoke render's overhead, a cached re-render, export against plain ffmpeg;
4. bench.diffusion: seconds per denoising step of every tiny diffusion twin (guidance passes apart
   and batched), FLOPs per step and the memory estimate of real-size Wan 2.1 1.3B, and on CUDA
   its step time with random weights.

`--only PART,...` runs just those parts, among them the ones the default run leaves out
(bench/extras.py): `layouts` (channels_last in a fresh process), `checkpointing` (decoder
checkpointing's FLOPs and memory), `imports` (import times), `compile` (torch.compile; slow).

`python -m bench.run [--device auto|cpu|cuda] [--doc PATH|""]
[--skip engines,memory,pipeline,diffusion] [--only PART,...] [--diffusion-steps N]
[--diffusion-real on|off] [--sizes WxH,...] [--memory-sizes WxH,...] [--vqgan NAME --clip NAME]
[--models DIR]`: the defaults are what `make bench` runs; the options let a test run it on tiny
models.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common
from bench.common import GB, GIB, table
from engines.core.device import pick_device

DOC = common.ROOT / "docs" / "benchmarks.md"
MEMCHECK_SIZES = ("128x128", "256x256", "512x288")
DEFAULT_PARTS = ("engines", "memory", "pipeline", "diffusion")
EXTRA_PARTS = ("layouts", "checkpointing", "imports", "compile")  # bench/extras.py
# "Typical VRAM requirements" on an RTX 3090 with the defaults of nerdyrodent/VQGAN-CLIP, as its
# README gives them (GB): https://github.com/nerdyrodent/VQGAN-CLIP#readme
PUBLISHED = (("380x380", 8.0), ("512x512", 10.0), ("900x900", 24.0))
PUBLISHED_SOURCE = ("nerdyrodent/VQGAN-CLIP README, \"Typical VRAM requirements\": "
                    "https://github.com/nerdyrodent/VQGAN-CLIP#readme")


def _sub(module: str, *args: str, env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", module, *args, "--out", str(out)]
        proc = subprocess.run(cmd, cwd=common.ROOT, env=common.child_env(env))
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode})")
        return json.loads(out.read_text())


def published_estimates(vqgan: str, clip: str, models: Path | None) -> list[dict[str, Any]]:
    """Our CUDA estimate for nerdyrodent's defaults (fp32, 32 cutouts, ViT-B/32, f16 16384) at
    the sizes users reported on an RTX 3090 (nvidia-smi, so CUDA context and cache included).
    Meta copies of models loaded on the CPU: no GPU needed."""
    from engines.frames import memory
    from engines.frames import vqgan_clip as V

    vq, perc = common.load(vqgan, clip, "cpu", models)
    rows = []
    for path in ("reference", "fast"):
        tracer = memory.MemoryTracer(V, V.Settings(cutn=32, path=path),
                               {"vqgan": (vq,), "clip": (perc,)}, device="cuda")
        for size, gib in PUBLISHED:
            w, h = (int(v) for v in size.split("x"))
            work = tracer.working(V.Settings(cutn=32, path=path), w, h)
            rows.append({"size": size, "path": path, "weights": tracer.weights,
                         "working": work, "published_gib": gib})
    return rows


# ------------------------------------------------------------------------------ markdown
def engines_md(e: dict) -> str:
    cuda = e["device_kind"].startswith("cuda")
    mem = "peak GPU memory (max allocated)" if cuda else "peak RSS (process)"
    rows = [[r["engine"], f"{r['size']} ({r['canvas']})", r["cutouts"], f"{r['fast_its']:.3g}",
             f"{r['reference_its']:.3g}", f"{r['ratio']:.2f}x", f"{r['frames_s']:.3g}",
             f"{r['commit_s']:.3f}", f"{r['peak_bytes'] / GB:.2f} GB", f"{r['flops'] / 1e9:.4g}",
             f"{r['flops_s'] / 1e9:.1f}", f"{r['peak_share']:.0%}"] for r in e["rows"]]
    c, b, lay = e["counts"], e["bf16"], e["layouts"]
    return "\n".join([
        f"Device peak: {e['peak_flops'] / 1e9:.0f} GFLOP/s ({e['peak_how']}). Timed iterations "
        f"per case: vqgan_clip {c['vq_fast']} fast, {c['vq_ref']} reference; pixel_clip "
        f"{c['px_fast']} fast, {c['px_ref']} reference; after {c['warm']} warm-up (the FLOP "
        f"count). frames/s = 1 / (10 / it/s + commit s), 10 iterations a frame.", "",
        table(["engine", "size (canvas)", "cutouts", "it/s fast", "it/s reference",
               "fast/ref", "frames/s", "commit s/frame", mem, "GFLOP/it", "GFLOP/s",
               "of peak"], rows), "",
        f"bf16 autocast vs fp32, one vqgan_clip iteration ({b['models']} models, "
        f"{b['size']}x{b['size']}, 8 cutouts): loss {b['loss_fp32']:.6f} vs "
        f"{b['loss_bf16']:.6f} (relative difference {b['loss_rel_diff']:.1e}), gradient "
        f"cosine similarity {b['grad_cosine']:.4f}.", "",
        f"VQGAN decoder forward+backward at {lay['size']}x{lay['size']} (the fast path's "
        f"layout; best of {lay['reps']}, alternating, after a warm-up of each): contiguous "
        f"{lay['contiguous']:.2f} s, channels_last {lay['channels_last']:.2f} s "
        f"({lay['contiguous'] / lay['channels_last']:.2f}x)."])


def memory_md(rows: list[dict], device: str, pub: list[dict] | None, models: str) -> str:
    body = [[r["size"], f"{r['estimate'] / GB:.3f}", f"{r['measured'] / GB:.3f}",
             f"{(r['ratio'] - 1):+.1%}"] for r in rows]
    what = ("RSS growth over one iteration (fresh process, MALLOC_MMAP_THRESHOLD_=65536)"
            if device == "cpu" else "torch.cuda.max_memory_allocated over one iteration")
    out = [f"vqgan_clip ({models}), 32 cutouts, fast path, one iteration on {device}; "
           f"measured = {what}; both exclude the weights.", "",
           table(["size", "estimate GB", "measured GB", "estimate error"], body)]
    if pub:
        out += ["", "The CUDA estimate (not yet checked on a GPU) at the sizes of published "
                "figures (nerdyrodent defaults on an RTX 3090, as users read them from the GPU, "
                f"so CUDA context and allocator cache included; {PUBLISHED_SOURCE}):", "",
                table(["size", "path", "estimate: weights + iteration GiB", "published GB"],
                      [[p["size"], p["path"] + (" (fp32, as the notebooks)" if p["path"] ==
                                                "reference" else " (bf16 autocast)"),
                        f"{p['weights'] / GIB:.2f} + {p['working'] / GIB:.2f} = "
                        f"{(p['weights'] + p['working']) / GIB:.2f}", p["published_gib"]]
                       for p in pub])]
    return "\n".join(out)


def pipeline_md(p: dict) -> str:
    o, x = p["overhead"], p["export"]
    return "\n".join([
        table(["measure", "seconds"], [
            [f"smoke render total (`{o['command']}`, fresh cache, {o['shots']} shots)",
             f"{o['total_s']:.1f}"],
            ["  of which engine (sum of per-frame seconds)", f"{o['engine_s']:.1f}"],
            ["  pipeline overhead = total - engine", f"{o['overhead_s']:.1f}"],
            ["  of which the other tasks' own time (run.json)", f"{o['other_tasks_s']:.1f}"],
            ["fully cached re-render (same command"
             + (", every task a cache hit)" if o["cached_all_hits"] else ", NOT all hits)"),
             f"{o['cached_s']:.1f}"]]), "",
        f"Export, {x['frames']} frames of {x['size']} (a moving gradient): promptreel "
        f"(PNG -> FFV1 intermediate -> h264 export, with frame-count checks) {x['ours_s']:.2f} s "
        f"= {x['ours_fps']:.0f} frames/s (the export step alone {x['export_only_s']:.2f} s); "
        f"plain `{x['plain_command']}` {x['plain_s']:.2f} s = {x['plain_fps']:.0f} frames/s "
        f"({x['ours_s'] / x['plain_s']:.1f}x the plain command's time)."])


def layouts_md(x: dict) -> str:
    return (f"VQGAN decoder forward+backward at {x['size']}x{x['size']} in a fresh process "
            f"({x['vqgan']}, nothing else loaded; best of {x['reps']} alternating rounds after "
            f"a warm-up of each): contiguous {x['contiguous']:.2f} s, channels_last "
            f"{x['channels_last']:.2f} s ({x['contiguous'] / x['channels_last']:.2f}x).")


def checkpointing_md(x: dict) -> str:
    by = {(r["size"], r["checkpointing"]): r for r in x["rows"]}
    rows = []
    for size in dict.fromkeys(r["size"] for r in x["rows"]):
        off, on = by[(size, False)], by[(size, True)]
        rows.append([size, f"{off['flops'] / 1e9:.4g}", f"{on['flops'] / 1e9:.4g}",
                     f"{on['flops'] / off['flops'] - 1:+.0%}", f"{off['working'] / GB:.3g}",
                     f"{on['working'] / GB:.3g}"])
    return "\n".join([
        f"Decoder checkpointing, one vqgan_clip iteration ({x['models']}, {x['cutn']} cutouts, "
        f"estimate for {x['device']}), counted on meta copies (FlopCounterMode and the memory "
        "estimate; no timing):", "",
        table(["size", "GFLOP/it", "GFLOP/it checkpointed", "FLOPs", "working GB",
               "working GB checkpointed"], rows)])


def imports_md(x: dict) -> str:
    return "\n".join([
        f"Import times, each module alone in a fresh interpreter (`python -X importtime`, "
        f"cumulative; best of {x['reps']}):", "",
        table(["module", "seconds"], [[f"`{m}`", f"{s:.2f}"] for m, s in x["modules"].items()])])


def compile_md(x: dict) -> str:
    e, c = x["none"], x["default"]
    pays = (f"compiling pays after about {x['pays_after']:.0f} iterations"
            if x["pays_after"] is not None else "compiling never pays here")
    return (f"torch.compile, vqgan_clip {x['size']}, {x['cutn']} cutouts ({x['models']}): eager "
            f"{e['per_iteration_s']:.2f} s per iteration, `compile: default` "
            f"{c['per_iteration_s']:.2f} s ({x['speedup']:.2f}x; mean of {x['iters']}) after a "
            f"first compiled iteration of {c['first_s']:.0f} s (eager: {e['first_s']:.1f} s); "
            f"{pays}.")


EXTRA_MD = {"layouts": ("channels_last in a fresh process", layouts_md),
            "checkpointing": ("Decoder checkpointing", checkpointing_md),
            "imports": ("Imports", imports_md), "compile": ("torch.compile", compile_md)}


def targets_md(e: dict | None, p: dict | None) -> str:
    rows = []
    cuda = bool(e) and e["device_kind"].startswith("cuda")
    find = {(r["engine"], r["size"]): r for r in (e or {}).get("rows", [])}
    vq = find.get(("vqgan_clip", "640x360"))
    px = find.get(("pixel_clip", "1280x720"))
    gpu_note = "" if cuda else " (CPU run: the target is for an H100-class GPU; GPU pending)"
    if vq:
        rows.append(["VQGAN-CLIP 640x360, 32 cutouts: >= 100 it/s",
                     f"{vq['fast_its']:.3g} it/s{gpu_note}"])
        rows.append(["  fast/reference >= 3x", f"{vq['ratio']:.2f}x{gpu_note}"])
    if px:
        rows.append(["Pixel engine 1280x720, 10 it/frame: >= 24 frames/s",
                     f"{px['frames_s']:.3g} frames/s{gpu_note}; the frame commit alone takes "
                     f"{px['commit_s']:.3f} s here: at most {1 / px['commit_s']:.1f} frames/s "
                     "while commits are not overlapped with the iterations"])
    else:
        rows.append(["Pixel engine 1280x720, 10 it/frame: >= 24 frames/s",
                     "not run (GPU pending)"])
    if p:
        o = p["overhead"]
        rows.append(["pipeline overhead < 15 s per render",
                     f"{o['overhead_s']:.1f} s ({'met' if o['overhead_s'] < 15 else 'not met'})"])
        rows.append(["fully cached re-render < 20 s",
                     f"{o['cached_s']:.1f} s ({'met' if o['cached_s'] < 20 else 'not met'})"])
    return table(["target (issue 9)", "this run"], rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--doc", default=str(DOC), help="markdown file to append to; '' = print only")
    ap.add_argument("--skip", default="", help="parts to skip: " + ",".join(DEFAULT_PARTS))
    ap.add_argument("--only", default="", help="run only these parts: "
                    + ",".join(DEFAULT_PARTS + EXTRA_PARTS))
    ap.add_argument("--diffusion-steps", type=int, default=4)
    ap.add_argument("--diffusion-real", default="on", choices=("on", "off"),
                    help="real-size Wan FLOPs and memory estimate (about a minute on a CPU)")
    ap.add_argument("--sizes", default=None, help="engine sizes WxH,... (default: by device)")
    ap.add_argument("--memory-sizes", default=",".join(MEMCHECK_SIZES))
    ap.add_argument("--vqgan", default=common.VQGAN)
    ap.add_argument("--clip", default=common.CLIP)
    ap.add_argument("--models", default=None, help="models dir (default: the render's)")
    argv = sys.argv[1:] if argv is None else argv
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    only = list(filter(None, a.only.split(",")))
    unknown = set(only) - set(DEFAULT_PARTS + EXTRA_PARTS)
    if unknown:
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from "
                 + ", ".join(DEFAULT_PARTS + EXTRA_PARTS))
    skip = set(filter(None, a.skip.split(",")))
    if only:
        skip |= set(DEFAULT_PARTS) - set(only)
    models = Path(a.models) if a.models else None
    pick = ["--vqgan", a.vqgan, "--clip", a.clip] + (["--models", a.models] if a.models else [])
    started, load0 = time.perf_counter(), common.load_average()
    e = mem = pub = p = diff = None
    if "engines" not in skip:
        e = _sub("bench.engines", "--device", device, *pick,
                 *(["--sizes", a.sizes] if a.sizes else []))
    if "memory" not in skip:
        from bench import memcheck

        mem = memcheck.run("vqgan_clip", a.memory_sizes.split(","), {"cutn": 32}, device=device,
                           vqgan=a.vqgan, clip=a.clip, models=a.models)
        if (a.vqgan, a.clip) == (common.VQGAN, common.CLIP):  # real sizes only
            pub = published_estimates(a.vqgan, a.clip, models)
    if "pipeline" not in skip:
        p = _sub("bench.pipeline", *(["--models", a.models] if a.models else []))
    if "diffusion" not in skip:
        diff = _sub("bench.diffusion", "--device", device, "--steps", str(a.diffusion_steps),
                    *(["--models", a.models] if a.models else []),
                    *(["--skip-real"] if a.diffusion_real == "off" else []))
    extras = {}
    for part in (x for x in EXTRA_PARTS if x in only):
        extras[part] = _sub("bench.extras", part, "--device", device, *pick,
                            *(["--sizes", a.sizes] if a.sizes else []))
    minutes = (time.perf_counter() - started) / 60
    cmd = "make bench" + (f' args="{" ".join(argv)}"' if argv else "")
    parts = [f"### {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · {common.device_name(device)}",
             "", f"Command: `{cmd}` ({minutes:.1f} min). Load average (1, 5, 15 min) at start "
             f"{load0}, at end {common.load_average()}: other work on the machine slows the "
             "timings.", "",
             table(["package", "version"], [[k, v] for k, v in common.versions().items()])]
    if e or p:
        parts += ["", "Where the targets stand in this run:", "", targets_md(e, p)]
    if e:
        parts += ["", "#### Engines", "", engines_md(e)]
    if mem:
        parts += ["", "#### Memory estimate against measured", "",
                  memory_md(mem, device, pub, f"{a.vqgan} + {a.clip}")]
    if p:
        parts += ["", "#### Pipeline", "", pipeline_md(p)]
    for part, result in extras.items():
        title, md = EXTRA_MD[part]
        parts += ["", f"#### {title}", "", md(result)]
    if diff:
        from bench.diffusion import markdown

        parts += ["", "#### Diffusion", "", markdown(diff)]
    text = "\n".join(parts) + "\n"
    print(text)
    if a.doc:
        with Path(a.doc).open("a") as f:
            f.write("\n" + text)
        print(f"appended to {a.doc}")


if __name__ == "__main__":
    main()
