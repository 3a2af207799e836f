"""Monocular depth models through transformers' `AutoModelForDepthEstimation`: the depth of
deforum's 3D mode. Registry kind `depth`, entries `conf/depth/<name>.yaml`:

- `source: hub`: a model repo in transformers' published layout (`config.json`,
  `model.safetensors`, `preprocessor_config.json`) at a pinned commit: Depth Anything V2
  (Yang et al. 2024, arXiv:2406.09414) or DPT (Ranftl et al. 2021, arXiv:2103.13413);
- `source: generated`: a randomly initialised Depth Anything (a DINOv2 backbone and DPT head,
  `arch` gives the sizes) saved with `save_pretrained` in that same layout, for tests (its depth
  is noise, or flat, but it loads and runs the same code).

`load` returns a `DepthModel`: called with a uint8 H x W x 3 image, it gives the model's relative
inverse depth (disparity: larger is nearer) as float32 [H, W] on the CPU, resized to the image
bilinearly. Both published families predict disparity, so nothing is inverted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.models.hf_quiet import quiet

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # the processors' normalisation


class DepthModel:
    """A loaded depth model and its image processor, on one device; `folder` holds its files
    (the SD engines' memory estimate counts its weights from the safetensors header)."""

    def __init__(self, model: Any, processor: Any, device: Any, folder: Path):
        self.model, self.processor, self.device, self.folder = model, processor, device, folder

    def __call__(self, image: Any) -> Any:
        import torch

        inputs = self.processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels).predicted_depth  # [1, h, w]
        h, w = image.shape[:2]
        out = torch.nn.functional.interpolate(out[:, None].float(), size=(h, w), mode="bilinear",
                                              align_corners=False)
        return out[0, 0].cpu()


def build_generated(entry: Any, out_dir: Path) -> None:
    """A random-weight Depth Anything of `entry.arch`'s sizes (deterministic from entry.seed),
    with its image processor, in transformers' layout."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    a = dict(entry.arch)
    hidden, size = int(a.get("hidden_size", 32)), int(a.get("image_size", 56))
    backbone = Dinov2Config(hidden_size=hidden, num_hidden_layers=4,
                            num_attention_heads=int(a.get("heads", 2)),
                            intermediate_size=2 * hidden, image_size=size, patch_size=14,
                            out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    neck = [int(v) for v in a.get("neck_hidden_sizes", [8, 16, 32, 32])]
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=hidden,
                                 neck_hidden_sizes=neck, fusion_hidden_size=neck[0] * 2,
                                 head_hidden_size=neck[0], patch_size=14,
                                 depth_estimation_type="relative")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        model = DepthAnythingForDepthEstimation(config).eval()
    with quiet():
        model.save_pretrained(str(out_dir))
    DPTImageProcessor(do_resize=True, size={"height": size, "width": size},
                      keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
                      image_mean=IMAGENET[0], image_std=IMAGENET[1]).save_pretrained(str(out_dir))


def load(entry: Any, folder: Path, device: Any = "cpu") -> DepthModel:
    """The depth model of a prepared entry (float32, eval mode) on `device`."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    with quiet():
        model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return DepthModel(model.eval().to(device), processor, device, Path(folder))
