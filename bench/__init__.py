"""Benchmarks: `make bench` (python -m bench.run) measures the engines against this machine's
peak, the pipeline's own overhead and the export, and appends the results to
docs/benchmarks.md. Benchmarks are not tests: nothing here asserts a time.

- bench/run.py       the driver: runs the parts below, writes the markdown
- bench/engines.py   iterations/s, frames/s, FLOPs, peak memory, fast/reference, per engine and size
- bench/memcheck.py  the memory estimate (engines/frames/memory.py) against measured memory, per size
- bench/pipeline.py  a smoke render's overhead, a cached re-render, export against plain ffmpeg
- bench/common.py    models, device peak FLOP/s, resident-set readings, versions
"""
