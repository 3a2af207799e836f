"""What is particular to the Wan variants (engines/frames/wan.py): Wan 2.2 TI2V-5B's image
conditioning (expand_timesteps: the image's latent is put back as the first latent frame, which
is why chunks keep the latents the pipeline returns, not the last step's), end to end on its
tiny twin with a kill mid-chunk; the two-expert guidance default from the registry."""

from __future__ import annotations

from tests.engines import video_run

TI2V = "generated_wan_ti2v_tiny"
W, H = 64, 32


def test_ti2v_start_image_is_the_first_frame_and_resumes_exactly(models_dir, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    red = video_run.image_file(tmp_path / "red.png", W, H, (220, 30, 30))
    blue = video_run.image_file(tmp_path / "blue.png", W, H, (30, 30, 220))

    def frames(init, name, **kw):
        out = video_run.render("wan", TI2V, video_run.plan(2, W, H, init_image=init),
                               tmp_path / name, models_dir, checkpoint_every=1, **kw)
        return out, [np.asarray(Image.open(io.BytesIO(b))).astype(int) for b in out.values()]

    _, text = frames(None, "text")
    raw_red, from_red = frames(red, "red")
    _, from_blue = frames(blue, "blue")
    assert not np.array_equal(text[0], from_red[0])
    assert not np.array_equal(from_red[0], from_blue[0])
    # killed after step 1 of the image-conditioned chunk, resumed: the same frames
    resumed, _ = frames(red, "killed", kill_after=1)
    assert resumed == raw_red


def test_two_expert_guidance_defaults_to_the_registry_and_yields_to_the_setting():
    from engines.frames import wan
    from engines.models.diffusers import rules_of
    from engines.models.registry import load_entry
    from tests.helpers import ROOT

    rules = rules_of(load_entry("diffusers", "wan2_2_t2v_a14b", ROOT / "conf"))
    kw = wan.call_kwargs(wan.Settings(model="wan2_2_t2v_a14b"), rules, 81, 1280, 720, "a", "",
                         None)
    assert (kw["guidance_scale"], kw["guidance_scale_2"]) == (4.0, 3.0)
    kw = wan.call_kwargs(wan.Settings(model="wan2_2_t2v_a14b", guidance_2=2.5), rules, 81, 1280,
                         720, "a", "", None)
    assert kw["guidance_scale_2"] == 2.5
