"""The benchmark harness (bench/) works: run on tiny generated models, on CPU. Benchmarks are not
tests: nothing here checks a time, only that the harness measures and writes what it should."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from bench import pipeline, run
from tests.helpers import ROOT


@pytest.mark.slow
def test_bench_run_on_tiny_models_appends_its_tables(models_dir, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    cmd = [sys.executable, "-m", "bench.run", "--device", "cpu", "--doc", str(doc),
           "--sizes", "64x64", "--memory-sizes", "64x64,96x96,128x128", "--vqgan",
           "generated_vqgan_f16_tiny", "--clip", "generated_clip_tiny", "--skip", "pipeline",
           "--diffusion-steps", "3", "--diffusion-real", "off",
           "--models", str(models_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\n### ") and "Command: `make bench args=" in text
    assert "| torch | 2." in text and "Where the targets stand in this run:" in text
    rows = re.findall(r"^\| (pixel_clip|vqgan_clip) \| 64x64 \(64x64\) \| (\d+) \| ([\d.e+]+) \| "
                      r"([\d.e+]+) \| ([\d.]+)x \|", text, re.M)
    assert [(r[0], r[1]) for r in rows] == [("pixel_clip", "4"), ("vqgan_clip", "32")]
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
    mem = re.findall(r"^\| (\d+x\d+) \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+)% \|$", text, re.M)
    assert [m[0] for m in mem] == ["64x64", "96x96", "128x128"]
    assert all(abs(float(m[3])) <= 20 for m in mem)  # the bound, on tiny models too
    assert "bf16 autocast vs fp32" in text and "#### Pipeline" not in text
    steps = re.findall(r"^\| (generated_\w+) \| (\w+) \| \d+x\d+x\d+ \| ([\d.]+) \| ([\d.]+) \| "
                       r"([\d.]+)x \|$", text, re.M)
    assert ("generated_wan_tiny", "wan") in {(r[0], r[1]) for r in steps}
    assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in steps)
    assert re.search(r"VQGAN decoder forward\+backward at 64x64 .*\): contiguous [\d.]+ s, "
                     r"channels_last [\d.]+ s", text)


def test_export_throughput_encodes_the_same_frames_both_ways():
    x = pipeline.export_throughput(n=6, w=64, h=48)
    assert (x["frames"], x["size"]) == (6, "64x48")
    assert x["ours_s"] > 0 and x["plain_s"] > 0 and x["ours_fps"] == pytest.approx(6 / x["ours_s"])


def test_targets_table_says_met_or_not_and_gpu_pending():
    e = {"device_kind": "cpu", "rows": [
        {"engine": "vqgan_clip", "size": "640x360", "fast_its": 0.05, "ratio": 1.2}]}
    p = {"overhead": {"overhead_s": 25.0, "cached_s": 13.0}}
    text = run.targets_md(e, p)
    assert "| VQGAN-CLIP 640x360, 32 cutouts: >= 100 it/s | 0.05 it/s (CPU run" in text
    assert "| pipeline overhead < 15 s per render | 25.0 s (not met) |" in text
    assert "| fully cached re-render < 20 s | 13.0 s (met) |" in text
    assert "| Pixel engine 1280x720, 10 it/frame: >= 24 frames/s | not run (GPU pending) |" in text


@pytest.mark.slow
def test_bench_extras_on_tiny_models_append_their_sections(models_dir, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n")
    cmd = [sys.executable, "-m", "bench.run", "--device", "cpu", "--doc", str(doc), "--only",
           "layouts,checkpointing", "--sizes", "64x64", "--vqgan", "generated_vqgan_f16_tiny",
           "--clip", "generated_clip_tiny", "--models", str(models_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = doc.read_text()
    assert "#### Engines" not in text and "Where the targets stand" not in text
    assert re.search(r"VQGAN decoder forward\+backward at 64x64 in a fresh process .*\): "
                     r"contiguous [\d.]+ s, channels_last [\d.]+ s", text)
    [row] = re.findall(r"^\| 64x64 \| ([\d.e+-]+) \| ([\d.e+-]+) \| ([+-]\d+)% \| ([\d.e+-]+) \| "
                       r"([\d.e+-]+) \|$", text, re.M)
    flops, flops_ckpt, _, mem, mem_ckpt = row
    assert float(flops_ckpt) > float(flops) > 0  # one more decoder forward
    assert 0 < float(mem_ckpt) < float(mem)  # fewer activations kept


def test_import_seconds_reads_python_importtime():
    from bench import extras

    assert 0 < extras.import_seconds("json", reps=1) < 60


def test_published_gpu_figures_cite_the_readme_that_publishes_them():
    pub = [{"size": s, "path": "reference", "weights": 2 ** 30, "working": 3 * 2 ** 30,
            "published_gib": gb} for s, gb in run.PUBLISHED]
    text = run.memory_md([{"size": "64x64", "estimate": 1e9, "measured": 1e9, "ratio": 1.0}],
                         "cpu", pub, "m")
    assert "https://github.com/nerdyrodent/VQGAN-CLIP" in text and ".md" not in text
    assert "| 900x900 | reference (fp32, as the notebooks) | 1.00 + 3.00 = 4.00 | 24.0 |" in text


def test_diffusion_bench_finds_every_tiny_twin_an_engine_runs_and_says_gpu_unmeasured():
    from bench import diffusion

    found = {(e.name, m.NAME) for e, m in diffusion.tiny_entries()}
    assert ("generated_wan_tiny", "wan") in found
    text = diffusion.markdown({"device": "cpu", "steps": 4, "tiny": [
        {"entry": "generated_wan_tiny", "engine": "wan", "size": "64x48", "frames": 9,
         "apart_s": 0.02, "batched_s": 0.016, "ratio": 1.25}], "wan_real": {
        "size": "832x480x81", "flops_forward": 4.0e13, "weights": 16 * 2 ** 30,
        "published_gib": 8.19, "estimate": {"group, tiling off": 7 * 2 ** 30}}})
    assert "| generated_wan_tiny | wan | 64x48x9 | 0.0200 | 0.0160 | 1.25x |" in text
    assert "one transformer forward = 40.0 TFLOP" in text
    assert "| group, tiling off | 7.00 | 7.52 |" in text
    assert "not measured, no CUDA device in this run" in text
