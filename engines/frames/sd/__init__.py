"""What the Stable Diffusion animation engines share (engines/frames/deforum.py, animatediff.py,
text2video_zero.py, controlnet.py, pix2pix.py, flow_restyle.py): their common settings, the
registry entries they pick (kind `sd`, engines/models/sd.py), pipeline loading (one base
pipeline per process, the others derived from its components with diffusers' `from_pipe`),
resumable denoising of a batch of frames, the shot's input frames and control maps, optical flow,
and the memory estimate. Nothing here is an engine.
"""
