"""Real-size diffusion pipelines without their weights, from the models' published configs.

`hollow_folder(family, folder)` writes a diffusers pipeline folder as the hub publishes it
(`model_index.json`, each component's config and safetensors files) whose safetensors hold the
real tensor names and shapes but no data: each file is its header followed by a hole (a sparse
file: its size is the real one, nothing is written to disk). The memory estimate
(engines/frames/diffusion/memory.py) reads only configs and safetensors headers, so it runs on
such a folder exactly as on downloaded weights: tests pretend a GPU with it, and `bench.diffusion`
reports the estimate of the real models. `meta_components(family)` builds the same components on
the meta device (FLOPs per step with FlopCounterMode; random weights on a GPU).

Configs (published):
- Wan 2.1 T2V 1.3B: the transformer config of diffusers' scripts/convert_wan_to_diffusers.py
  ("Wan-T2V-1.3B"), the VAE of `AutoencoderKLWan()` defaults (the Wan 2.1 VAE, as that script
  builds it) and the UMT5-XXL text encoder (google/umt5-xxl: d_model 4096, d_ff 10240, 24
  layers, 64 heads of 64, vocabulary 256384); FlowMatch/UniPC shift 3.0 (480p).
- LTX-Video 0.9 (2B): `LTXVideoTransformer3DModel()` and `AutoencoderKLLTXVideo()` defaults
  (diffusers' defaults are the Lightricks/LTX-Video 0.9.0 configs) and T5-v1.1-XXL (d_model
  4096, d_ff 10240, 24 layers, 64 heads, vocabulary 32128).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

WAN_1_3B = {"added_kv_proj_dim": None, "attention_head_dim": 128, "cross_attn_norm": True,
            "eps": 1e-06, "ffn_dim": 8960, "freq_dim": 256, "in_channels": 16,
            "num_attention_heads": 12, "num_layers": 30, "out_channels": 16,
            "patch_size": [1, 2, 2], "qk_norm": "rms_norm_across_heads", "text_dim": 4096,
            "rope_max_seq_len": 1024}
UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24,
            "num_heads": 64, "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "tie_word_embeddings": False}
T5_XXL = {**UMT5_XXL, "vocab_size": 32128}

FAMILIES = {
    "wan": {"pipeline": "WanPipeline",
            "components": {"transformer": ("diffusers", "WanTransformer3DModel", WAN_1_3B),
                           "vae": ("diffusers", "AutoencoderKLWan", {}),
                           "text_encoder": ("transformers", "UMT5EncoderModel", UMT5_XXL)},
            "scheduler": ("UniPCMultistepScheduler", {"prediction_type": "flow_prediction",
                                                      "use_flow_sigmas": True, "flow_shift": 3.0}),
            "tokenizer": "T5TokenizerFast"},
    "ltx": {"pipeline": "LTXPipeline",
            "components": {"transformer": ("diffusers", "LTXVideoTransformer3DModel", {}),
                           "vae": ("diffusers", "AutoencoderKLLTXVideo", {}),
                           "text_encoder": ("transformers", "T5EncoderModel", T5_XXL)},
            "scheduler": ("FlowMatchEulerDiscreteScheduler", {"use_dynamic_shifting": True}),
            "tokenizer": "T5TokenizerFast"},
}
DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _build(library: str, cls_name: str, config: dict[str, Any]) -> Any:
    """A component on the meta device (no memory, whatever its size)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True):
        if library == "diffusers":
            import diffusers

            return getattr(diffusers, cls_name).from_config(config)
        import transformers

        cfg_cls = getattr(transformers, cls_name).config_class
        return getattr(transformers, cls_name)(cfg_cls(**config))


def meta_components(family: str) -> dict[str, Any]:
    """{component: module on meta} of a family's real-size pipeline."""
    spec = FAMILIES[family]
    return {name: _build(*c) for name, c in spec["components"].items()}


def _hollow_safetensors(path: Path, module: Any, dtype: str) -> None:
    """A safetensors file with `module`'s tensor names and shapes and no data (a hole)."""
    header: dict[str, Any] = {}
    offset = 0
    size = {"F32": 4, "BF16": 2, "F16": 2}[dtype]
    for key, t in module.state_dict().items():
        n = t.numel() * size
        header[key] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)  # sparse: the data is a hole


def hollow_folder(family: str, folder: Path, dtype: str = "bfloat16") -> Path:
    """Write the hollow pipeline folder of `family` into `folder` (module docstring)."""
    import diffusers

    spec = FAMILIES[family]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": spec["pipeline"], "_diffusers_version":
                             diffusers.__version__}
    for name, (library, cls_name, _config) in spec["components"].items():
        module = _build(library, cls_name, spec["components"][name][2])
        sub = folder / name
        sub.mkdir(exist_ok=True)
        if library == "diffusers":
            module.save_config(sub)
            weights = sub / "diffusion_pytorch_model.safetensors"
        else:
            module.config.to_json_file(sub / "config.json")
            weights = sub / "model.safetensors"
        _hollow_safetensors(weights, module, DTYPES[dtype])
        index[name] = [library, cls_name]
    sched, sched_config = spec["scheduler"]
    getattr(diffusers, sched).from_config(sched_config).save_config(folder / "scheduler")
    index["scheduler"] = ["diffusers", sched]
    index["tokenizer"] = ["transformers", spec["tokenizer"]]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
