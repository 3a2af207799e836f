"""What the diffusion video engines share (engines/frames/wan.py, ltx.py, ...): their common
settings, the rules check, chunk planning for long shots, resumable denoising, pipeline loading
with dtype/offload/speed levers, the memory estimate, and the render loop.

A diffusion engine module declares its family (the `rules.family` of the registry entries it
runs), its pipeline call (`call_kwargs`) and its decoding of final latents (`decode`); the rest
is here.
"""
