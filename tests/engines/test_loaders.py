"""engines/models/taming.py and engines/models/clip.py on generated tiny models in the published
formats: VQGAN / GumbelVQ / Net2NetTransformer round trips, safe config reading, layout inference,
CLIP encoders, the open_clip pretrained-file path and the per-process caches."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml

from engines.core.errors import ConfigError, MissingWeightsError
from engines.models import clip as clip_format
from engines.models import loaded, registry, weights
from engines.models import taming as taming_format
from engines.models.weights import ModelEntry, RemoteFile

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Generated tiny VQGAN, GumbelVQ and CLIP, built once for this test session."""
    out = tmp_path_factory.mktemp("models")
    for kind, name in [("vqgan", "generated_vqgan_f16_tiny"), ("vqgan", "generated_gumbel_f8_tiny"),
                       ("clip", "generated_clip_tiny")]:
        weights.materialise_generated(registry.load_entry(kind, name, CONF), out)
    return out


def entry(kind: str, name: str) -> ModelEntry:
    return registry.load_entry(kind, name, CONF)


def local_entry(name: str, loader: str, files: list[str]) -> ModelEntry:
    """A downloadable-style entry whose files are already in place (no network needed)."""
    return ModelEntry(name=name, kind="vqgan", source="url", loader=loader,
                      files=[RemoteFile(name=f, url=f"https://example.invalid/{f}") for f in files])


def place(models: Path, name: str, files: dict[str, bytes]) -> Path:
    folder = models / "vqgan" / name
    folder.mkdir(parents=True)
    for fname, data in files.items():
        (folder / fname).write_bytes(data)
    return folder


@pytest.mark.parametrize("name, size, latent", [
    ("generated_vqgan_f16_tiny", (64, 64), (1, 32, 4, 4)),
    ("generated_vqgan_f16_tiny", (96, 160), (1, 32, 6, 10)),
    ("generated_gumbel_f8_tiny", (64, 64), (1, 32, 8, 8)),
    ("generated_gumbel_f8_tiny", (96, 160), (1, 32, 12, 20)),
])
def test_vqgan_round_trip(tiny_models, name, size, latent):
    model = loaded.load_model(entry("vqgan", name), tiny_models)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        quant, _, _ = model.encode(x)
        out = model.decode(quant)
    assert tuple(quant.shape) == latent and tuple(out.shape) == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_vqgan_files_and_cache(tiny_models):
    e = entry("vqgan", "generated_vqgan_f16_tiny")
    folder = tiny_models / "vqgan" / e.name
    config = yaml.safe_load((folder / "model.yaml").read_text())
    assert config["model"]["target"] == "taming.models.vqgan.VQModel"
    assert config["model"]["params"]["lossconfig"]["target"].endswith("VQLPIPSWithDiscriminator")
    assert config["model"]["params"]["ddconfig"]["ch_mult"] == [1, 1, 2, 2, 4]
    ckpt = torch.load(folder / "last.ckpt", weights_only=True)
    assert {k: v for k, v in ckpt.items() if k != "state_dict"} == {
        "epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.0.8"}
    model = loaded.load_model(e, tiny_models)
    assert (folder / "last.safetensors").is_file() and (folder / "last.safetensors.json").is_file()
    assert loaded.load_model(e, tiny_models) is model  # cached per process
    assert sum(p.numel() for p in model.parameters()) == sum(
        v.numel() for v in ckpt["state_dict"].values())
    assert torch.equal(model.quantize.embedding.weight, ckpt["state_dict"]["quantize.embedding.weight"])


def test_infer_config_matches_the_published_one(tiny_models):
    for name, target in [("generated_vqgan_f16_tiny", "VQModel"),
                         ("generated_gumbel_f8_tiny", "GumbelVQ")]:
        folder = tiny_models / "vqgan" / name
        sd = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]
        published = taming_format.parse_vq_config((folder / "model.yaml").read_text(), target)
        assert taming_format.infer_vq_config(sd) == published


def test_net2net_first_stage_and_inferred_config(tiny_models, tmp_path):
    tiny = tiny_models / "vqgan" / "generated_vqgan_f16_tiny"
    sd = torch.load(tiny / "last.ckpt", weights_only=True)["state_dict"]
    big = {f"first_stage_model.{k}": v for k, v in sd.items()}
    big["transformer.tok_emb.weight"] = torch.zeros(8, 4)
    big["cond_stage_model.encoder.conv_in.weight"] = torch.zeros(4, 1, 3, 3)
    published = yaml.safe_load((tiny / "model.yaml").read_text())["model"]
    project = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer",
                         "params": {"first_stage_config": published,
                                    "cond_stage_config": "__is_unconditional__",
                                    "transformer_config": {"target": "os.system"}}}}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": big, "epoch": 9}, ckpt)
    data = ckpt.read_bytes()
    place(tmp_path, "faces", {"model.yaml": yaml.safe_dump(project).encode(), "last.ckpt": data})
    place(tmp_path, "noconfig", {"last.ckpt": data})  # like ade20k: layout inferred
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    outs = []
    for name, files in [("faces", ["model.yaml", "last.ckpt"]), ("noconfig", ["last.ckpt"])]:
        model = loaded.load_model(local_entry(name, "Net2NetTransformer", files), tmp_path)
        assert torch.equal(model.quantize.embedding.weight, sd["quantize.embedding.weight"])
        with torch.no_grad():
            outs.append(model.decode(model.encode(x)[0]))
    assert outs[0].shape == (1, 3, 64, 96) and torch.equal(outs[0], outs[1])
    assert (tmp_path / "vqgan" / "faces" / "last.first_stage_model.safetensors").is_file()


def test_untrusted_config_targets_are_never_imported(tiny_models):
    text = (tiny_models / "vqgan" / "generated_vqgan_f16_tiny" / "model.yaml").read_text()
    with pytest.raises(ConfigError, match="os.system"):
        taming_format.parse_vq_config(text.replace("taming.models.vqgan.VQModel", "os.system"),
                                      "VQModel")
    with pytest.raises(ConfigError, match="the registry entry's loader"):
        taming_format.parse_vq_config(text, "GumbelVQ")
    with pytest.raises(ConfigError, match="ddconfig.ch"):
        taming_format.parse_vq_config(text.replace("ch: 32", "ch: '32'"), "VQModel")
    with pytest.raises(ConfigError, match="unparsable"):
        taming_format.parse_vq_config("model: [", "VQModel")
    bad = yaml.safe_load(text)
    bad["model"]["params"]["ddconfig"]["evil"] = "!!python/object/apply:os.system"
    with pytest.raises(ConfigError, match="ddconfig.evil"):
        taming_format.parse_vq_config(yaml.safe_dump(bad), "VQModel")


def test_checkpoint_that_does_not_fit_its_config(tiny_models, tmp_path):
    tiny = tiny_models / "vqgan" / "generated_vqgan_f16_tiny"
    gumbel = tiny_models / "vqgan" / "generated_gumbel_f8_tiny"
    place(tmp_path, "mixed", {"model.yaml": (tiny / "model.yaml").read_bytes(),
                              "last.ckpt": (gumbel / "last.ckpt").read_bytes()})
    with pytest.raises(taming_format.CheckpointMismatchError, match="missing keys"):
        loaded.load_model(local_entry("mixed", "VQModel", ["model.yaml", "last.ckpt"]), tmp_path)


def test_prepare_converts_in_pre_production_and_refuses_unsafe_checkpoints(tiny_models,
                                                                         tmp_path):
    import os

    from engines.core.errors import UnsafeCheckpointError

    e = entry("vqgan", "generated_gumbel_f8_tiny")
    folder = weights.prepare(e, tiny_models)
    assert folder == tiny_models / "vqgan" / e.name and (folder / "last.safetensors").is_file()

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    evil = tmp_path / "last.ckpt"
    sd = torch.load(folder / "last.ckpt", weights_only=True)
    sd["callbacks"] = {"cb": Payload()}
    torch.save(sd, evil)
    place(tmp_path / "m", "evil", {"model.yaml": (folder / "model.yaml").read_bytes(),
                                   "last.ckpt": evil.read_bytes()})
    bad = local_entry("evil", "GumbelVQ", ["model.yaml", "last.ckpt"])
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        weights.prepare(bad, tmp_path / "m", download=False)
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "m" / "vqgan" / "evil" / "last.safetensors").exists()


def test_missing_real_vqgan_fails_before_any_network_call(tmp_path):
    e = entry("vqgan", "vqgan_imagenet_f16_16384")
    started = time.monotonic()
    with pytest.raises(MissingWeightsError, match="runtime.download=false"):
        loaded.load_model(e, tmp_path)
    assert time.monotonic() - started < 5


def test_import_shim_only_when_needed():
    import sys

    taming_format.ensure_importable()
    shim = sys.modules["pytorch_lightning.utilities.distributed"]
    assert callable(shim.rank_zero_only)
    import taming.main  # noqa: F401  (the import the shim exists for)


def test_clip_tiny_encodes_text_and_image_to_the_same_dim(tiny_models):
    p = loaded.load_model(entry("clip", "generated_clip_tiny"), tiny_models)
    assert (p.image_size, p.embed_dim, p.name) == (64, 64, "generated_clip_tiny")
    assert not p.model.training and not any(t.requires_grad for t in p.model.parameters())
    tokens = p.tokenizer(["a red fox in the snow", "a koala playing the piano"])
    assert tokens.shape == (2, 77) and tokens[0, 0] == 49406  # start-of-text of the real BPE
    with torch.no_grad():
        text = p.encode_text(["a red fox in the snow", "a koala playing the piano"])
        image = p.encode_image(torch.rand(3, 3, 64, 64))
    assert text.shape == (2, 64) and image.shape == (3, 64)
    assert torch.allclose(p.mean.flatten(), torch.tensor(clip_format.OPENAI_MEAN))
    assert loaded.load_model(entry("clip", "generated_clip_tiny"), tiny_models) is p


def test_open_clip_entry_loads_a_local_pretrained_file(tiny_models, tmp_path):
    """The `source: open_clip` path (pretrained=<file in models_dir>) with a tiny registered
    architecture, since real weights cannot be downloaded here."""
    import json

    import open_clip

    folder = tiny_models / "clip" / "generated_clip_tiny"
    config = json.loads((folder / "open_clip_config.json").read_text())
    (tmp_path / "tiny-test-clip.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(tmp_path / "tiny-test-clip.json")
    target = tmp_path / "models" / "clip" / "tiny_local"
    target.mkdir(parents=True)
    (target / "open_clip_model.safetensors").write_bytes(
        (folder / "open_clip_model.safetensors").read_bytes())
    e = ModelEntry(name="tiny_local", kind="clip", source="open_clip",
                   arch={"model": "tiny-test-clip", "pretrained": "none"},
                   files=[RemoteFile(name="open_clip_model.safetensors",
                                     url="https://example.invalid/w.safetensors")])
    p = loaded.load_model(e, tmp_path / "models")
    ref = loaded.load_model(entry("clip", "generated_clip_tiny"), tiny_models)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(p.encode_image(x), ref.encode_image(x), atol=1e-6)
        assert torch.allclose(p.encode_text(["a fox"]), ref.encode_text(["a fox"]), atol=1e-6)


def test_missing_open_clip_weights_name_the_url(tmp_path):
    e = entry("clip", "vit_b_32_openai")
    with pytest.raises(MissingWeightsError) as err:
        loaded.load_model(e, tmp_path)
    assert e.files[0].url in str(err.value)
    assert str(tmp_path / "clip" / "vit_b_32_openai" / "open_clip_model.safetensors") in str(
        err.value)


@pytest.mark.slow
def test_real_size_generated_vqgan(tmp_path):
    """generated_vqgan_f16_16384 has the published architecture (for benchmarks)."""
    model = loaded.load_model(entry("vqgan", "generated_vqgan_f16_16384"), tmp_path)
    assert model.quantize.embedding.weight.shape == (16384, 256)
    with torch.no_grad():
        z = model.encode(torch.zeros(1, 3, 64, 64))[0]
    assert z.shape == (1, 256, 4, 4)
