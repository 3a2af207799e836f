"""taming-transformers (VQGAN) without its training stack: the import shim, a safe reading of
the published `model.yaml`, generated models in the published format, and `load`

- `ensure_importable`: `taming.main` imports `pytorch_lightning.utilities.distributed`, gone in
  Lightning 2.x. If (and only if) that import fails, a small module exposing `rank_zero_only` is
  registered in `sys.modules` under that name. No site-packages edits.
- `model.yaml` is downloaded, so untrusted: it is read with `yaml.safe_load` and its `target`
  strings are never imported. Only VQModel / GumbelVQ / Net2NetTransformer (whose
  `first_stage_config` is used) are accepted, the parameters are type-checked, `lossconfig` is
  replaced by `taming.modules.losses.DummyLoss` (the published LPIPS loss downloads VGG16 and is
  unused for generation) and GumbelVQ's temperature schedule by a fixed one.
- Without a `model.yaml` (ade20k has no trustworthy config host) the architecture is inferred
  from the checkpoint's tensor shapes (`infer_vq_config`).
- Weights: the Lightning checkpoint is converted once to safetensors by engines.models.safe_ckpt (no
  pickled code runs), then loaded strictly for the model's own keys (`loss.*` is dropped).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types
from pathlib import Path
from typing import Any

import yaml

from engines.core.errors import ConfigError, PromptreelError

CONFIG_FILE = "model.yaml"  # taming config, as published
CKPT_FILE = "last.ckpt"  # Lightning checkpoint, as published
TARGETS = {"taming.models.vqgan.VQModel": "VQModel", "taming.models.vqgan.GumbelVQ": "GumbelVQ",
           "taming.models.cond_transformer.Net2NetTransformer": "Net2NetTransformer"}
LOSS = {"target": "taming.modules.losses.DummyLoss"}
PUBLISHED_LOSS = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                  "params": {"disc_conditional": False, "disc_in_channels": 3,
                             "disc_start": 250001, "disc_weight": 0.8, "codebook_weight": 1.0}}
TEMPERATURE = {"target": "taming.lr_scheduler.LambdaWarmUpCosineScheduler",
               "params": {"warm_up_steps": 0, "max_decay_steps": 1000001, "lr_start": 0.9,
                          "lr_max": 0.9, "lr_min": 1.0e-06}}  # as published; unused in eval
DDCONFIG = {"double_z": bool, "z_channels": int, "resolution": int, "in_channels": int,
            "out_ch": int, "ch": int, "ch_mult": list, "num_res_blocks": int,
            "attn_resolutions": list, "dropout": float, "resamp_with_conv": bool,
            "give_pre_end": bool, "tanh_out": bool}
INFER_RESOLUTION = 256  # pixels; only attention placement depends on it, not the weights


class CheckpointMismatchError(PromptreelError):
    """The checkpoint's tensors do not fit the model its config describes."""


def ensure_importable() -> None:
    """Make `import taming.models.vqgan` work with Lightning 2.x (see module doc)."""
    name = "pytorch_lightning.utilities.distributed"
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        try:
            from pytorch_lightning.utilities import rank_zero_only
        except ImportError:  # very old or absent Lightning: taming only needs the decorator name
            def rank_zero_only(fn: Any) -> Any:
                return fn
        shim = types.ModuleType(name)
        shim.rank_zero_only = rank_zero_only
        sys.modules[name] = shim


# --- config ----------------------------------------------------------------------------------

def _bad(where: str, key: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"{where}:{key}", value, accepted)


def clean_params(params: Any, target: str, where: str) -> dict[str, Any]:
    """The parameters a VQModel/GumbelVQ is built from, type-checked; the rest is dropped."""
    if not isinstance(params, dict) or not isinstance(params.get("ddconfig"), dict):
        raise _bad(where, "params.ddconfig", params, "a mapping with the encoder/decoder layout")
    dd = {}
    for key, value in params["ddconfig"].items():
        kind = DDCONFIG.get(key)
        if kind is None:
            raise _bad(where, f"params.ddconfig.{key}", value, ", ".join(DDCONFIG))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if kind is list:
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        if not ok:
            raise _bad(where, f"params.ddconfig.{key}", value, kind.__name__)
        dd[key] = value
    out: dict[str, Any] = {"target": target, "ddconfig": dd}
    for key in ("n_embed", "embed_dim"):
        value = params.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _bad(where, f"params.{key}", value, "a positive integer")
        out[key] = value
    if params.get("remap") is not None:
        raise _bad(where, "params.remap", params["remap"], "null (codebook remapping files are "
                   "not supported)")
    nlabels = params.get("colorize_nlabels")
    if nlabels is not None:
        out["colorize_nlabels"] = int(nlabels)
    if target == "GumbelVQ":
        out["kl_weight"] = float(params.get("kl_weight", 1e-8))
    elif params.get("sane_index_shape"):
        out["sane_index_shape"] = True
    return out


def parse_vq_config(text: str, loader: str, where: str = CONFIG_FILE) -> dict[str, Any]:
    """Read a published taming config safely; returns {target, ddconfig, n_embed, embed_dim,...}
    for the VQGAN itself (the first stage of a Net2NetTransformer)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(where, "(unparsable YAML)", "a taming model config", str(exc)) from None
    model = raw.get("model") if isinstance(raw, dict) else None
    target = TARGETS.get(model.get("target")) if isinstance(model, dict) else None
    if target is None:
        got = model.get("target") if isinstance(model, dict) else raw
        raise _bad(where, "model.target", got, ", ".join(TARGETS))
    if target != loader:
        raise _bad(where, "model.target", target, f"{loader} (the registry entry's loader; "
                   "a wrong file behind the URL, or yaml and ckpt swapped?)")
    params = model.get("params")
    if target == "Net2NetTransformer":
        first = params.get("first_stage_config") if isinstance(params, dict) else None
        sub = TARGETS.get(first.get("target")) if isinstance(first, dict) else None
        if sub not in ("VQModel", "GumbelVQ"):
            raise _bad(where, "model.params.first_stage_config.target", first, "a taming VQModel")
        return clean_params(first.get("params"), sub, where)
    return clean_params(params, target, where)


def local_entry(entry: Any, key: str = "vqgan") -> Any:
    """A `source: local` entry (vqgan=local) checked when the config is read: both files exist,
    the yaml is a taming config whose target gives the loader (VQModel, GumbelVQ or
    Net2NetTransformer). Returns the entry with its loader set."""
    paths = {k: Path(str(getattr(entry, k))).expanduser() for k in ("config", "checkpoint")}
    for k, path in paths.items():
        if not path.is_file():
            raise ConfigError(f"{key}.{k}", getattr(entry, k), "an existing file",
                              f"not found: {path.resolve()}")
    try:
        raw = yaml.safe_load(paths["config"].read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{key}.config", entry.config, "a taming model yaml",
                          f"unreadable: {' '.join(str(exc).split())[:200]}") from None
    model = raw.get("model") if isinstance(raw, dict) else None
    target = TARGETS.get(model.get("target")) if isinstance(model, dict) else None
    if target is None:
        raise ConfigError(f"{key}.config", entry.config, "a taming model yaml whose model.target "
                          f"is one of {', '.join(TARGETS)}")
    if entry.loader not in (None, target):
        raise ConfigError(f"{key}.loader", entry.loader, f"{target} (the yaml's model.target), "
                          "or null")
    parse_vq_config(paths["config"].read_text(), target, str(paths["config"]))
    return entry.model_copy(update={"loader": target})


def published_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The taming `model.yaml` layout for a cleaned config (what the published files contain)."""
    params: dict[str, Any] = {"embed_dim": cfg["embed_dim"], "n_embed": cfg["n_embed"],
                              "monitor": "val/rec_loss", "ddconfig": dict(cfg["ddconfig"]),
                              "lossconfig": PUBLISHED_LOSS}
    if cfg["target"] == "GumbelVQ":
        params["kl_weight"] = cfg.get("kl_weight", 1e-8)
        params["temperature_scheduler_config"] = TEMPERATURE
    target = next(k for k, v in TARGETS.items() if v == cfg["target"])
    return {"model": {"base_learning_rate": 4.5e-06, "target": target, "params": params}}


def infer_vq_config(sd: dict[str, Any]) -> dict[str, Any]:
    """The VQModel/GumbelVQ config that fits a state dict, from its tensor shapes."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise CheckpointMismatchError(f"cannot infer the VQGAN layout: no {key} in the "
                                          "checkpoint (not a taming VQGAN?)")
        return tuple(sd[key].shape)

    ch, in_channels = shape("encoder.conv_in.weight")[:2]
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.down.")})
    blocks = {k.split(".")[4] for k in sd if k.startswith("encoder.down.0.block.")}
    ch_mult = [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in levels]
    attn = [INFER_RESOLUTION // 2 ** i for i in levels
            if any(k.startswith(f"encoder.down.{i}.attn.") for k in sd)]
    z_channels = shape("quant_conv.weight")[1]
    gumbel = "quantize.embed.weight" in sd
    n_embed, embed_dim = shape("quantize.embed.weight" if gumbel else "quantize.embedding.weight")
    dd = {"double_z": shape("encoder.conv_out.weight")[0] == 2 * z_channels,
          "z_channels": z_channels, "resolution": INFER_RESOLUTION, "in_channels": in_channels,
          "out_ch": shape("decoder.conv_out.weight")[0], "ch": ch, "ch_mult": ch_mult,
          "num_res_blocks": len(blocks), "attn_resolutions": attn, "dropout": 0.0}
    cfg = {"target": "GumbelVQ" if gumbel else "VQModel", "ddconfig": dd, "n_embed": n_embed,
           "embed_dim": embed_dim}
    if gumbel:
        cfg["kl_weight"] = 1e-8
    return cfg


def build_model(cfg: dict[str, Any]) -> Any:
    """A VQModel or GumbelVQ with random weights from a cleaned config (CPU, eval mode)."""
    ensure_importable()
    from taming.models.vqgan import GumbelVQ, VQModel

    kw = {k: cfg[k] for k in ("colorize_nlabels", "sane_index_shape", "kl_weight") if k in cfg}
    with contextlib.redirect_stdout(io.StringIO()):  # taming prints the latent shape
        if cfg["target"] == "GumbelVQ":
            model = GumbelVQ(dict(cfg["ddconfig"]), LOSS, cfg["n_embed"], cfg["embed_dim"],
                             temperature_scheduler_config=TEMPERATURE, **kw)
        else:
            model = VQModel(dict(cfg["ddconfig"]), LOSS, cfg["n_embed"], cfg["embed_dim"], **kw)
    return model.eval()


# --- generated models ------------------------------------------------------------------------

def build_generated(entry: Any, out_dir: Path) -> None:
    """Write `model.yaml` + `last.ckpt` (Lightning layout) for a generated VQGAN entry; the
    random weights come from torch.manual_seed(entry.seed), so the files are byte-identical."""
    import torch

    if entry.loader not in ("VQModel", "GumbelVQ"):
        raise ConfigError(f"{entry.name}.loader", entry.loader, "VQModel or GumbelVQ (a "
                          "generated VQGAN is a first stage only)")
    cfg = clean_params(dict(entry.arch), entry.loader, f"{entry.name}.arch")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        model = build_model(cfg)
    ckpt = {"state_dict": model.state_dict(), "epoch": 0, "global_step": 0,
            "pytorch-lightning_version": "1.0.8"}
    out_dir = Path(out_dir)
    torch.save(ckpt, out_dir / CKPT_FILE)
    text = yaml.safe_dump(published_config(cfg), sort_keys=False)
    (out_dir / CONFIG_FILE).write_text(text)


# --- loading ---------------------------------------------------------------------------------

def prefix_of(entry: Any) -> str:
    """State-dict prefix of the VQGAN inside an entry's checkpoint ("" for a plain VQGAN)."""
    return "first_stage_model." if entry.loader == "Net2NetTransformer" else ""


def after_fetch(entry: Any, files: dict[str, Path], *, download: bool = False) -> None:
    """Convert the Lightning checkpoint to safetensors once, through the safe unpickler (a
    checkpoint that tries to run code is refused here, in pre-production)."""
    from engines.models import safe_ckpt

    if CKPT_FILE not in files:
        raise ConfigError(f"{entry.name}.files", sorted(files), f"a file named {CKPT_FILE}")
    safe_ckpt.cached_safetensors(files[CKPT_FILE], prefix=prefix_of(entry))


def load(entry: Any, folder: Path, device: Any = "cpu") -> Any:
    """The VQGAN whose prepared files are in `folder` (engines/models/weights.py `prepare`) on
    `device`, eval mode, requires_grad False (engines/models/loaded.py caches it)."""
    from safetensors.torch import load_file

    from engines.models import safe_ckpt

    if entry.kind != "vqgan":
        raise ConfigError("vqgan", entry.name, "a vqgan registry entry", f"it is a {entry.kind}")
    files = {p.name: p for p in Path(folder).iterdir() if p.name in (CKPT_FILE, CONFIG_FILE)}
    if CKPT_FILE not in files:
        raise ConfigError(f"{entry.name}.files", sorted(files), f"a file named {CKPT_FILE}")
    sd = load_file(str(safe_ckpt.cached_safetensors(files[CKPT_FILE], prefix=prefix_of(entry))))
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}
    if CONFIG_FILE in files:
        where = str(files[CONFIG_FILE])
        cfg = parse_vq_config(files[CONFIG_FILE].read_text(), entry.loader, where)
    else:
        cfg = infer_vq_config(sd)
    model = build_model(cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        own, got = set(model.state_dict()), set(sd)
        raise CheckpointMismatchError(
            f"{entry.name}: {files[CKPT_FILE]} does not fit its config: "
            f"{len(own - got)} missing keys (e.g. {sorted(own - got)[:3]}), {len(got - own)} "
            f"unexpected (e.g. {sorted(got - own)[:3]}); {str(exc).splitlines()[-1][:200]}. "
            "Were the yaml and ckpt of different models downloaded?") from None
    model.requires_grad_(False)
    return model.to(device)
