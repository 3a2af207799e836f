"""CycleGAN ResNet generator (Zhu et al. 2017): the seed 001 paper's learned post-process.

Architecture, from the CycleGAN paper's appendix: c7s1-64, d128, d256, R256 x 9 (or 6), u128,
u64, c7s1-3, then tanh. c7s1-k: 7x7 convolution, stride 1, k filters, instance norm, ReLU, with
reflection padding; dk: 3x3 convolution, stride 2, instance norm, ReLU; Rk: a residual block of
two reflection-padded 3x3 convolutions with k filters (norm, ReLU, conv, norm); uk: 3x3
fractional-strided (transposed) convolution, stride 1/2, instance norm, ReLU. The last layer has
no norm. Width scales with ngf (64 in the paper).

Checkpoint format: the state dict the public CycleGAN PyTorch implementation saves
(`latest_net_G.pth`): keys `model.<i>.weight|bias` of one `nn.Sequential` and
`model.<i>.conv_block.<j>.*` inside residual blocks; instance norm has no parameters (and, as
the public code does, running statistics left by old checkpoints are dropped); convolutions
before an instance norm have a bias, before a batch norm none. ngf, the number of blocks, the
norm (instance | batch) and dropout are read from the state dict itself, so a 6- or 9-block
generator of any width loads. Files are read without running pickled code
(`engines.models.safe_ckpt`: torch's weights_only unpickler) or as `.safetensors`.

Images: uint8 RGB in, mapped to -1..1 (x / 127.5 - 1, the public code's training range), or,
with `input_range="0..1"`, to 0..1 (x / 255: what the 001 paper's authors feed their generator at
inference, the optimised pixels as they are; their text2video.py); the tanh output is mapped
back from -1..1 either way and rounded.
Sizes: the two stride-2 stages need multiples of 4 (and the reflection padding at 1/4 size at
least 8 pixels); a frame is reflection-padded on the right and bottom to the next multiple of 4
(at least 8; replicate padding where the frame is too small to reflect) and cropped back, so the
output keeps the input size. On CPU a different `batch` may change a few values by 1 (float
summation order); the same settings always give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from engines.core.errors import ConfigError, PromptreelError

CHECKPOINT_FILE = "latest_net_G.pth"  # the public implementation's file name
NORMS = ("instance", "batch")
_STATS = ("running_mean", "running_var", "num_batches_tracked")


@lru_cache(maxsize=1)
def _classes() -> tuple[type, type]:
    import torch.nn as nn

    def norm_layer(norm: str, dim: int) -> Any:
        if norm == "batch":
            return nn.BatchNorm2d(dim, affine=True)
        return nn.InstanceNorm2d(dim, affine=False, track_running_stats=False)

    class ResidualBlock(nn.Module):
        """Rk: x + (pad, conv3, norm, ReLU, [dropout], pad, conv3, norm)(x)."""

        def __init__(self, dim: int, norm: str, dropout: bool, bias: bool):
            super().__init__()
            layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias),
                      norm_layer(norm, dim), nn.ReLU(True)]
            if dropout:
                layers.append(nn.Dropout(0.5))
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=bias),
                       norm_layer(norm, dim)]
            self.conv_block = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv_block(x)

    class ResnetGenerator(nn.Module):
        """c7s1-ngf, d2ngf, d4ngf, R4ngf x n_blocks, u2ngf, ungf, c7s1-output_nc, tanh."""

        def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64,
                     n_blocks: int = 9, norm: str = "instance", dropout: bool = False):
            super().__init__()
            bias = norm == "instance"
            layers: list[Any] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias),
                                 norm_layer(norm, ngf), nn.ReLU(True)]
            for mult in (1, 2):  # d2ngf, d4ngf
                layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1,
                                     bias=bias), norm_layer(norm, ngf * mult * 2), nn.ReLU(True)]
            layers += [ResidualBlock(ngf * 4, norm, dropout, bias) for _ in range(n_blocks)]
            for mult in (4, 2):  # u2ngf, ungf
                layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2,
                                              padding=1, output_padding=1, bias=bias),
                           norm_layer(norm, ngf * mult // 2), nn.ReLU(True)]
            layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
            self.model = nn.Sequential(*layers)
            self.arch = {"input_nc": input_nc, "output_nc": output_nc, "ngf": ngf,
                         "n_blocks": n_blocks, "norm": norm, "dropout": dropout}

        def forward(self, x: Any) -> Any:
            return self.model(x)

    return ResnetGenerator, ResidualBlock


def build_generator(ngf: int = 64, n_blocks: int = 9, norm: str = "instance",
                    dropout: bool = False, input_nc: int = 3, output_nc: int = 3) -> Any:
    """A ResnetGenerator (torch module, random init) whose state-dict keys match the public
    format."""
    if norm not in NORMS:
        raise ConfigError("cyclegan.arch.norm", norm, " | ".join(NORMS))
    if ngf < 1 or n_blocks < 0:
        raise ConfigError("cyclegan.arch", {"ngf": ngf, "n_blocks": n_blocks},
                          "ngf >= 1 and n_blocks >= 0")
    return _classes()[0](input_nc, output_nc, ngf, n_blocks, norm, dropout)


def clean_state_dict(sd: dict[str, Any]) -> dict[str, Any]:
    """Strip a DataParallel `module.` prefix and drop instance-norm running statistics (keys of
    old checkpoints the public code also ignores)."""
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    batch = "model.2.weight" in sd
    return {k: v for k, v in sd.items() if batch or k.rsplit(".", 1)[-1] not in _STATS}


def arch_of(sd: dict[str, Any]) -> dict[str, Any]:
    """Generator hyper-parameters read from a (cleaned) public-format state dict."""
    if "model.1.weight" not in sd:
        raise PromptreelError("not a CycleGAN ResNet generator state dict: no 'model.1.weight' "
                              f"(first keys: {sorted(sd)[:5]})")
    first = sd["model.1.weight"]
    blocks = {k.split(".")[1] for k in sd if ".conv_block." in k}
    last = max((k for k in sd if k.startswith("model.") and k.endswith(".weight")
                and ".conv_block." not in k), key=lambda k: int(k.split(".")[1]))
    return {"input_nc": int(first.shape[1]), "output_nc": int(sd[last].shape[0]),
            "ngf": int(first.shape[0]), "n_blocks": len(blocks),
            "norm": "batch" if "model.2.weight" in sd else "instance",
            "dropout": bool(blocks) and not any(k.endswith("conv_block.5.weight") for k in sd)}


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a `.pth` (plain state dict, read safely) or `.safetensors` file."""
    path = Path(path)
    if not path.is_file():
        raise PromptreelError(f"CycleGAN checkpoint {path} does not exist; give the path of a "
                              f"{CHECKPOINT_FILE} saved by the public CycleGAN code "
                              "(refine.checkpoint) or pick a registry entry (refine.model)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    from engines.models import safe_ckpt

    obj, _ignored = safe_ckpt.read_checkpoint(path)
    return safe_ckpt.state_dict_of(obj, path)


def load_generator(path: Path, device: Any = "cpu") -> Any:
    """The generator saved at `path`, in eval mode with gradients off, on `device`."""
    sd = clean_state_dict(read_state_dict(path))
    arch = arch_of(sd)
    model = build_generator(**arch)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        why = " ".join(str(exc).split())[:400]
        raise PromptreelError(f"{path}: not a CycleGAN ResNet generator of the public layout "
                              f"(read as {arch}): {why}") from None
    return model.eval().requires_grad_(False).to(device)


def load(entry: Any, folder: Path, device: Any = "cpu") -> Any:
    """The generator of a prepared cyclegan registry entry (its file in `folder`)."""
    if entry.kind != "cyclegan":
        raise ConfigError("refine.model", entry.name, "a cyclegan registry entry",
                          f"it is a {entry.kind}")
    name = CHECKPOINT_FILE if entry.source == "generated" else entry.files[0].name
    return load_generator(Path(folder) / name, device)


def build_generated(entry: Any, out_dir: Path) -> None:
    """Write `latest_net_G.pth` (a plain state dict, the public format) with random weights
    from entry.arch ({ngf, n_blocks, norm, dropout}) and entry.seed, initialised as the public
    code does (conv weights N(0, 0.02), biases 0, batch-norm scales N(1, 0.02)).
    Byte-identical for the same entry."""
    import torch

    arch = dict(entry.arch)
    unknown = set(arch) - {"ngf", "n_blocks", "norm", "dropout", "input_nc", "output_nc"}
    if unknown:
        raise ConfigError(f"{entry.name}.arch", sorted(unknown),
                          "ngf, n_blocks, norm, dropout, input_nc, output_nc")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        model = build_generator(**arch)
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                torch.nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.normal_(m.weight, 1.0, 0.02)
                torch.nn.init.zeros_(m.bias)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, Path(out_dir) / CHECKPOINT_FILE)


# ------------------------------------------------------------------------- inference
INPUT_RANGES = ("-1..1", "0..1")


def _run_batch(frames: list[np.ndarray], model: Any, device: Any,
               input_range: str = "-1..1") -> list[np.ndarray]:
    """Refine same-size uint8 frames [H, W, 3] in one forward pass."""
    import torch
    import torch.nn.functional as F

    h, w = frames[0].shape[:2]
    x = torch.from_numpy(np.stack(frames)).to(device).permute(0, 3, 1, 2).float()
    x = x / 255 if input_range == "0..1" else x / 127.5 - 1
    ph, pw = max(8, h + -h % 4) - h, max(8, w + -w % 4) - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    with torch.no_grad():
        y = model(x)[:, :, :h, :w]
    y = ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return list(y.cpu().numpy())


def _batches(frames: Iterable[np.ndarray], batch: int) -> Iterator[list[np.ndarray]]:
    """Consecutive frames of equal size, at most `batch` at a time."""
    group: list[np.ndarray] = []
    for f in frames:
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames must be uint8 [H, W, 3] RGB, got {f.dtype} {f.shape}")
        if group and (len(group) == batch or group[0].shape != f.shape):
            yield group
            group = []
        group.append(f)
    if group:
        yield group


def refine(frames: np.ndarray | Iterable[np.ndarray], model: Any, device: Any = "cpu",
           batch: int = 4, input_range: str = "-1..1") -> np.ndarray | Iterator[np.ndarray]:
    """Run the generator on uint8 RGB frames, keeping each frame's size. `input_range`: what
    the frames are mapped to before the generator (module docstring).

    frames: an array [N, H, W, 3] (returns an array of the same shape) or an iterable of
    [H, W, 3] arrays (returns an iterator, frames processed `batch` at a time as they come).
    """
    if batch < 1:
        raise ConfigError("refine.batch", batch, "a whole number >= 1")
    if input_range not in INPUT_RANGES:
        raise ConfigError("refine.input_range", input_range, " or ".join(INPUT_RANGES))
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise ValueError(f"frames must be [N, H, W, 3], got shape {frames.shape}")
        out = [y for g in _batches(frames, batch) for y in _run_batch(g, model, device, input_range)]
        return np.stack(out) if out else frames.copy()
    return (y for g in _batches(frames, batch) for y in _run_batch(g, model, device, input_range))
