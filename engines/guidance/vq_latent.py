"""The VQGAN side of the vqgan_clip engine (engines/frames/vqgan_clip.py): a taming VQModel's
codebook and latent range, straight-through quantisation and synthesis (optionally with
activation-checkpointed decoding: the same values, fewer activations kept), and encoding.
"""

from __future__ import annotations

from typing import Any


def _decode(model: Any, quant: Any) -> Any:
    """taming's VQModel.decode (post_quant_conv, then the decoder)."""
    return model.decode(quant)


def _decode_checkpointed(model: Any, quant: Any) -> Any:
    """taming's Decoder.forward with every block (ResnetBlock, attention, upsample, output head)
    under activation checkpointing: only block inputs are kept; the same values as `_decode`."""
    from taming.modules.diffusionmodules.model import nonlinearity
    from torch.utils.checkpoint import checkpoint

    def ck(fn: Any, *args: Any) -> Any:
        return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)

    dec = model.decoder
    h = dec.conv_in(model.post_quant_conv(quant))
    h = ck(dec.mid.block_1, h, None)
    h = ck(dec.mid.attn_1, h)
    h = ck(dec.mid.block_2, h, None)
    for level in reversed(range(dec.num_resolutions)):
        up = dec.up[level]
        for i in range(dec.num_res_blocks + 1):
            h = ck(up.block[i], h, None)
            if len(up.attn) > 0:
                h = ck(up.attn[i], h)
        if level != 0:
            h = ck(up.upsample, h)
    if dec.give_pre_end:
        return h
    return ck(lambda x: dec.conv_out(nonlinearity(dec.norm_out(x))), h)


def prepare_model(model: Any, settings: Any) -> Any:
    """Put a loaded VQGAN in the memory format of the settings' path, in place (channels_last
    for fast, contiguous for reference): the loaded model is shared between renders. A model
    already in that format is left as it is (no copy)."""
    import torch

    fmt = torch.channels_last if settings.path == "fast" else torch.contiguous_format
    return model.to(memory_format=fmt)


class VQ:
    """Codebook, latent range, factor, straight-through synthesis and encoding of a taming model
    (prepared by `prepare_model`). `fast`: bf16 autocast on CUDA (module docstring)."""

    def __init__(self, model: Any, *, fast: bool = False, checkpointing: bool = False,
                 compile_mode: str = "none"):
        from engines.guidance.clip_guide import compiled

        self.model, self.fast = model, fast
        self.decode = compiled(_decode_checkpointed if checkpointing else _decode,
                               compile_mode if fast else "none")
        q = model.quantize
        self.gumbel = hasattr(q, "proj") and hasattr(q, "embed")
        self.codebook = (q.embed.weight if self.gumbel else q.embedding.weight).detach()
        self.zmin = self.codebook.min(0).values[None, :, None, None]
        self.zmax = self.codebook.max(0).values[None, :, None, None]
        self.factor = 2 ** (model.encoder.num_resolutions - 1)

    def quantise(self, z: Any) -> Any:
        """Nearest codebook entry per position, straight-through gradient to z."""
        import torch

        from engines.guidance.clip_guide import replace_grad

        zf = z.movedim(1, 3)
        with torch.no_grad():
            d = (zf.pow(2).sum(-1, keepdim=True) + self.codebook.pow(2).sum(1)
                 - 2 * zf @ self.codebook.T)
            codes = d.argmin(-1)
        return replace_grad(self.codebook[codes], zf).movedim(3, 1)

    def synth(self, z: Any) -> Any:
        """Image [1, 3, H, W] float32 in 0..1 from a latent (differentiable)."""
        from engines.guidance.clip_guide import autocast, clamp_with_grad, param_dtype

        q = self.quantise(z)
        if q.device.type == "meta":  # a memory trace: bf16 weights stand in for autocast
            q = q.to(param_dtype(self.model.decoder))
        with autocast(q.device, self.fast):
            image = self.decode(self.model, q).float()
        return clamp_with_grad(image.add(1).div(2), 0.0, 1.0)

    def encode(self, image: Any) -> Any:
        """Quantised latent of an image [1, 3, H, W] in 0..1 (H, W multiples of the factor)."""
        import torch

        with torch.no_grad():
            h = self.model.quant_conv(self.model.encoder(image * 2 - 1))
            if self.gumbel:
                return self.codebook[self.model.quantize.proj(h).argmax(1)].movedim(3, 1)
            return self.quantise(h).detach()

    def random(self, height: int, width: int, generator: Any, device: Any) -> Any:
        """Latent of uniformly drawn codes for a canvas of height x width pixels."""
        import torch

        th, tw = height // self.factor, width // self.factor
        codes = torch.randint(self.codebook.shape[0], (th * tw,), generator=generator)
        return self.codebook[codes.to(self.codebook.device)].view(1, th, tw, -1) \
            .permute(0, 3, 1, 2).contiguous().to(device)
