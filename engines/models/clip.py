"""CLIP perceptors (open_clip) loaded from the models directory, never from a hub at run time.

- `source: open_clip` entries (e.g. ViT-B-32 `openai`): the weights file fetched by
  engines/models/weights.py into <models_dir>/clip/<name>/ is passed to open_clip as `pretrained=<file>`;
  QuickGELU, mean and std come from open_clip's own pretrained table for (model, pretrained), so
  a local file behaves exactly like the hub tag.
- `source: generated` entries: open_clip's `local-dir:` layout (`open_clip_config.json` +
  `open_clip_model.safetensors`), written by `build_generated` from entry.arch and entry.seed.
The tokenizer is open_clip's (its BPE vocabulary ships in the package, so it works offline).
`load(entry, folder, device)` builds a `Perceptor` (engines/models/loaded.py caches it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True, eq=False)
class Perceptor:
    """A CLIP model ready for guidance. Images are float (B, 3, S, S) in [0, 1] with
    S = image_size pixels; `mean`/`std` are (1, 3, 1, 1) tensors on the model's device."""

    name: str  # registry name
    model: Any  # open_clip CLIP, eval mode, requires_grad False
    image_size: int  # input side in pixels (square)
    mean: Any  # per-channel mean subtracted from [0, 1] pixels
    std: Any  # per-channel std the pixels are divided by
    tokenizer: Callable[..., Any]  # list[str] -> (n, context_length) int64 token ids
    embed_dim: int  # size of the joint embedding

    def normalize(self, images: Any) -> Any:
        """[0, 1] pixels -> the model's input normalisation."""
        return (images - self.mean) / self.std

    def encode_image(self, images: Any) -> Any:
        """(B, 3, S, S) pixels in [0, 1] -> (B, embed_dim) features (not unit length)."""
        return self.model.encode_image(self.normalize(images))

    def encode_text(self, texts: list[str]) -> Any:
        """Texts -> (n, embed_dim) features (not unit length), on the model's device."""
        tokens = self.tokenizer(list(texts)).to(self.mean.device)
        return self.model.encode_text(tokens)


def build_generated(entry: Any, out_dir: Path) -> None:
    """Write a random-weight CLIP in open_clip's local-dir layout from entry.arch
    ({model_cfg, preprocess_cfg}); torch.manual_seed(entry.seed) makes it byte-identical."""
    import torch
    from open_clip.model import CLIP, CustomTextCLIP
    from safetensors.torch import save_file

    arch = dict(entry.arch)
    model_cfg = dict(arch.get("model_cfg") or {})
    if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(model_cfg):
        raise ConfigError(f"{entry.name}.arch.model_cfg", model_cfg,
                          "an open_clip model config with embed_dim, vision_cfg and text_cfg")
    preprocess = dict(arch.get("preprocess_cfg") or {"mean": list(OPENAI_MEAN),
                                                     "std": list(OPENAI_STD)})
    cls = CustomTextCLIP if model_cfg.pop("custom_text", False) else CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        model = cls(**model_cfg)
    out_dir = Path(out_dir)
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out_dir / WEIGHTS_FILE))
    config = {"model_cfg": dict(arch["model_cfg"]), "preprocess_cfg": preprocess}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))


def load(entry: Any, folder: Path, device: Any = "cpu") -> Perceptor:
    """The perceptor whose prepared files are in `folder`, on `device`, eval mode, no grad."""
    import open_clip
    import torch

    if entry.kind != "clip":
        raise ConfigError("clip", entry.name, "a clip registry entry", f"it is a {entry.kind}")
    if entry.source == "generated":
        name = f"local-dir:{folder}"
        model = open_clip.create_model(name, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    else:
        arch, tag = str(entry.arch.get("model")), entry.arch.get("pretrained")
        if arch not in open_clip.list_models():
            raise ConfigError(f"{entry.name}.arch.model", arch, "an open_clip model name, e.g. "
                              "ViT-B-32, ViT-B-16, ViT-L-14, RN50")
        pcfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
        quick = bool(entry.arch.get("quick_gelu", pcfg.get("quick_gelu", False)))
        weights_file = Path(folder) / entry.files[0].name
        norm = {k: pcfg[k] for k in ("mean", "std") if pcfg.get(k)}
        model = open_clip.create_model(arch, pretrained=str(weights_file), device=device,
                                       force_quick_gelu=quick, force_preprocess_cfg=norm or None,
                                       require_pretrained=True)
        tokenizer = open_clip.get_tokenizer(arch)
    model.eval().requires_grad_(False)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    size = size if isinstance(size, int) else size[0]
    mean = torch.tensor(pre.get("mean", OPENAI_MEAN), device=device).view(1, 3, 1, 1)
    std = torch.tensor(pre.get("std", OPENAI_STD), device=device).view(1, 3, 1, 1)
    model_cfg = (entry.arch.get("model_cfg") if entry.source == "generated"
                 else open_clip.get_model_config(str(entry.arch["model"])))
    embed_dim = int(model_cfg["embed_dim"])
    return Perceptor(name=entry.name, model=model, image_size=int(size), mean=mean, std=std,
                     tokenizer=tokenizer, embed_dim=embed_dim)
