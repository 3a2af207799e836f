"""Human pose models through transformers: ViTPose (Xu et al. 2022, arXiv:2204.12484), the pose
detector of the controlnet engine's `control: pose`. Registry kind `pose`, entries
`conf/pose/<name>.yaml`:

- `source: hub`: a ViTPose repo in transformers' published layout (`config.json`,
  `model.safetensors`, `preprocessor_config.json`) at a pinned commit;
- `source: generated`: a randomly initialised ViTPose (`arch` gives the sizes) saved with
  `save_pretrained` in that layout, for tests (its keypoints are noise, but it runs the same code).

ViTPose is a top-down model: it finds the 17 COCO keypoints of one person inside a box. The box is
the whole frame (the model's processor crops and resizes it to the model's input), so it is meant
for footage with one person filling most of the frame, as dance and performance clips are; for
several people, draw the pose maps with another tool and give them as the input video
(`control: maps`). `load` returns a `PoseModel`: called with a uint8 H x W x 3 image, it gives
(keypoints [17, 2] in pixels, scores [17]) as float32 numpy arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.models.hf_quiet import quiet


class PoseModel:
    """A loaded ViTPose and its image processor, on one device."""

    def __init__(self, model: Any, processor: Any, device: Any, folder: Path):
        self.model, self.processor, self.device, self.folder = model, processor, device, folder

    def __call__(self, image: Any) -> tuple[Any, Any]:
        import torch

        h, w = image.shape[:2]
        boxes = [[[0.0, 0.0, float(w), float(h)]]]  # COCO (x, y, width, height): the whole frame
        inputs = self.processor(images=image, boxes=boxes, return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device, next(self.model.parameters()).dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixels)
        out.heatmaps = out.heatmaps.float().cpu()
        person = self.processor.post_process_pose_estimation(out, boxes=boxes)[0][0]
        return (person["keypoints"].float().numpy(), person["scores"].float().numpy())


def build_generated(entry: Any, out_dir: Path) -> None:
    """A random-weight ViTPose of `entry.arch`'s sizes (deterministic from entry.seed), with its
    image processor, in transformers' layout."""
    import torch
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    a = dict(entry.arch)
    height, width = (int(v) for v in a.get("image_size", [64, 48]))
    layers = int(a.get("layers", 2))
    backbone = VitPoseBackboneConfig(image_size=[height, width], patch_size=[16, 16],
                                     hidden_size=int(a.get("hidden_size", 32)),
                                     num_hidden_layers=layers,
                                     num_attention_heads=int(a.get("heads", 2)), mlp_ratio=2,
                                     out_indices=[layers])
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=True, num_labels=17)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        model = VitPoseForPoseEstimation(config).eval()
    with quiet():
        model.save_pretrained(str(out_dir))
    VitPoseImageProcessor(size={"height": height, "width": width}).save_pretrained(str(out_dir))


def load(entry: Any, folder: Path, device: Any = "cpu") -> PoseModel:
    """The pose model of a prepared entry (float32, eval mode) on `device`."""
    from transformers import VitPoseForPoseEstimation, VitPoseImageProcessor

    with quiet():
        model = VitPoseForPoseEstimation.from_pretrained(str(folder), local_files_only=True)
        processor = VitPoseImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return PoseModel(model.eval().to(device), processor, device, Path(folder))
