"""What is particular to the LTX-Video engine (engines/frames/ltx.py): its own decoding of the
packed final latents (with the decoder's timestep noise from the chunk's seed), and image
conditioning: a start image makes the first frame, and each chunk of a long shot after the first
runs the image pipeline on the previous chunk's frame, resuming exactly after a kill."""

from __future__ import annotations

import pytest

from tests.engines import video_run

MODEL = "generated_ltx_tiny"
W = H = 64


@pytest.fixture(scope="module")
def ltx_pipe(models_dir):
    from engines.frames import ltx
    from engines.frames.diffusion import pipeline as loader

    source = video_run.source(MODEL, models_dir)
    yield loader.load(source, ltx.Settings(model=MODEL), "cpu")
    loader.forget()


def test_decode_unpacks_the_token_sequence_to_the_chunk_frames(ltx_pipe):
    import numpy as np
    import torch

    from engines.frames import ltx

    pipe, settings = ltx_pipe, ltx.Settings(model=MODEL)
    frames = 9
    tokens = ((frames - 1) // pipe.vae_temporal_compression_ratio + 1) * (
        H // pipe.vae_spatial_compression_ratio) * (W // pipe.vae_spatial_compression_ratio)
    latents = torch.randn(1, tokens, pipe.transformer.config.in_channels,
                          generator=torch.Generator().manual_seed(0))
    a = ltx.decode(pipe, latents, settings=settings, frames=frames, height=H, width=W, seed=3)
    assert a.shape == (frames, H, W, 3) and a.dtype == np.uint8
    again = ltx.decode(pipe, latents, settings=settings, frames=frames, height=H, width=W, seed=3)
    other = ltx.decode(pipe, latents, settings=settings, frames=frames, height=H, width=W, seed=4)
    assert np.array_equal(a, again)  # the decoder's noise comes from the chunk's seed
    assert pipe.vae.config.timestep_conditioning and not np.array_equal(a, other)


def test_a_start_image_makes_the_first_frame(models_dir, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    red = video_run.image_file(tmp_path / "red.png", W, H, (220, 30, 30))
    blue = video_run.image_file(tmp_path / "blue.png", W, H, (30, 30, 220))

    def first(init, name):
        frames = video_run.render("ltx", MODEL, video_run.plan(2, W, H, init_image=init),
                                  tmp_path / name, models_dir, checkpoint_every=1)
        return [np.asarray(Image.open(io.BytesIO(b))).astype(int) for b in frames.values()]

    text, from_red, from_blue = first(None, "text"), first(red, "red"), first(blue, "blue")
    assert not np.array_equal(text[0], from_red[0])
    assert not np.array_equal(from_red[0], from_blue[0])
    # the image is the first latent frame: the start image moves frame 0 more than frame 1
    assert np.abs(from_red[0] - from_blue[0]).mean() > np.abs(from_red[1] - from_blue[1]).mean()


def test_long_shot_chunks_start_from_the_previous_chunk_and_resume_exactly(models_dir, tmp_path,
                                                                          monkeypatch):
    from engines.frames.diffusion import pipeline as loader

    used = []
    real = loader.load

    def spy(source, settings, device, *, image=False, engine=None):
        used.append(image)
        return real(source, settings, device, image=image, engine=engine)

    monkeypatch.setattr(loader, "load", spy)
    shot = video_run.plan(12, W, H)  # chunks of 9 frames overlapping by 2: frames 0-8, 7-15
    whole = video_run.render("ltx", MODEL, shot, tmp_path / "whole", models_dir, overlap=2,
                             checkpoint_every=1)
    assert len(whole) == 12 and used == [False, True]  # text, then image-to-video
    # killed after the 4th durable state: step 1 of the second, image-conditioned chunk
    resumed = video_run.render("ltx", MODEL, shot, tmp_path / "killed", models_dir, overlap=2,
                               checkpoint_every=1, kill_after=4)
    assert resumed == whole
