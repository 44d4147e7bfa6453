"""ViT and MAE pieces for TinyMIM (``modules/tinymim/__init__.py``), built from timm's ``VisionTransformer``.

* ``build_vit`` — a timm ``VisionTransformer`` initialised as MAE does (xavier-uniform linears and
  patch embedding, CLS ~ N(0, .02), a fixed 2-D sin-cos position embedding in the ``pos_embed``
  slot). Its ``state_dict`` keys are exactly the encoder keys of an official MAE checkpoint
  (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.<i>.*``, ``norm.*``).
* ``MAEDecoder`` — MAE's light decoder, its parameter names as in the official ``models_mae.py``
  (``mask_token``, ``decoder_embed``, ``decoder_pos_embed``, ``decoder_blocks``, ``decoder_norm``,
  ``decoder_pred``), so ``{**vit.state_dict(), **decoder.state_dict()}`` *is* the official layout.
* ``encode_visible`` — the MAE encoder pass over the unmasked patches only.
* ``block_input`` / ``block_qkv`` — the tokens entering block ``l`` (1-based) and that block's
  ``attn.qkv(norm1(x))``: the Q, K, V the relation loss needs, read from timm's own modules without
  running ``attn.forward`` (whose fused attention hides them).
* ``load_mae_encoder`` — an official/timm-layout MAE state dict (optionally under ``"model"``) into a
  ViT, decoder and mask-token keys stripped; missing or mis-shaped encoder keys are a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.layers import DropPath
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

DECODER_PREFIXES = ("decoder_", "mask_token")


def sincos_pos_embed(grid_size: int, dim: int, *, cls_token: bool = True) -> torch.Tensor:
    """[1, (1 +) grid², dim] fixed 2-D sin-cos table (timm's builder); the CLS row is zeros as in MAE."""
    table = build_sincos2d_pos_embed([grid_size, grid_size], dim=dim)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table], dim=0)
    return table.unsqueeze(0)


def mae_init_(module: nn.Module) -> None:
    """MAE's ``_init_weights``: xavier-uniform linears with zero bias, LayerNorm 1 / 0."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_uniform_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def build_vit(*, embed_dim: int, depth: int, num_heads: int, image_size: int = 32, patch_size: int = 4,
              in_channels: int = 3, num_classes: int = 0, global_pool: str = "token",
              drop_path_rate: float = 0.0) -> VisionTransformer:
    """A pre-norm ViT (qkv bias, LN eps 1e-6, MLP ratio 4, GELU) with MAE's initialisation.

    ``global_pool="token"`` keeps the final ``norm`` (MAE pre-training layout); ``"avg"`` replaces it
    by ``fc_norm`` after global average pooling of the patch tokens (MAE fine-tune layout).
    """
    vit = VisionTransformer(img_size=image_size, patch_size=patch_size, in_chans=in_channels, num_classes=num_classes,
                            global_pool=global_pool, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                            mlp_ratio=4.0, qkv_bias=True, drop_path_rate=drop_path_rate)
    mae_init_(vit)
    patch_weight = vit.patch_embed.proj.weight
    nn.init.xavier_uniform_(patch_weight.view(patch_weight.shape[0], -1))  # as a linear layer, like MAE
    nn.init.normal_(vit.cls_token, std=0.02)
    with torch.no_grad():
        vit.pos_embed.copy_(sincos_pos_embed(vit.patch_embed.grid_size[0], embed_dim))
    if num_classes:
        nn.init.trunc_normal_(vit.head.weight, std=2e-5)  # MAE fine-tune head init
        nn.init.zeros_(vit.head.bias)
    return vit


def set_drop_path(vit: VisionTransformer, rates: list[float]) -> None:
    """Per-block stochastic-depth rates (a phase change: distillation and fine-tuning use different rules)."""
    for block, rate in zip(vit.blocks, rates, strict=True):
        block.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
        block.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()


class MAEDecoder(nn.Module):
    """MAE's decoder: embed visible tokens, re-insert mask tokens, blocks, predict pixels per patch."""

    def __init__(self, *, encoder_dim: int, num_patches: int, patch_pixels: int, decoder_dim: int = 64,
                 decoder_depth: int = 2, decoder_num_heads: int = 4) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(encoder_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        grid = int(round(num_patches ** 0.5))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(grid, decoder_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_num_heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, patch_pixels)
        mae_init_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``latent`` [B, 1 + visible, D_enc] → pixel predictions [B, num_patches, patch_pixels]."""
        x = self.decoder_embed(latent)
        batch, num_patches = ids_restore.shape
        masked = self.mask_token.expand(batch, num_patches + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], masked], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


def encode_visible(vit: VisionTransformer, images: torch.Tensor, ids_keep: torch.Tensor,
                   final_norm: nn.Module | None = None) -> torch.Tensor:
    """MAE ``forward_encoder``: embed, add positions, keep ``ids_keep`` patches, prepend CLS, run blocks.

    ``final_norm`` replaces ``vit.norm`` when the ViT is in the fine-tune layout (``norm`` is Identity).
    """
    x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
    x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for block in vit.blocks:
        x = block(x)
    return (final_norm or vit.norm)(x)


def block_input(vit: VisionTransformer, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Tokens [B, 1 + N, D] (CLS first) entering block ``layer`` (1-based), i.e. after blocks 1…layer−1."""
    if not 1 <= layer <= len(vit.blocks):
        raise ValueError(f"layer {layer} is outside the ViT's blocks 1..{len(vit.blocks)}")
    x = vit._pos_embed(vit.patch_embed(images))
    for block in vit.blocks[:layer - 1]:
        x = block(x)
    return x


def block_qkv(vit: VisionTransformer, images: torch.Tensor, layer: int) -> torch.Tensor:
    """``blocks[layer].attn.qkv(blocks[layer].norm1(x))`` [B, 1 + N, 3·D] (Q, K, V concatenated)."""
    tokens = block_input(vit, images, layer)
    block = vit.blocks[layer - 1]
    return block.attn.qkv(block.norm1(tokens))


def block_output(vit: VisionTransformer, images: torch.Tensor, layer: int) -> torch.Tensor:
    """Tokens [B, 1 + N, D] leaving block ``layer`` (1-based), before any final norm."""
    tokens = block_input(vit, images, layer)
    return vit.blocks[layer - 1](tokens)


def mae_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an MAE checkpoint file (``{"model": sd}`` as the official one, or ``sd``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MAE checkpoint {path} does not exist; pass an official/timm-layout MAE .pth")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a corrupt file gets one line, not a pickle traceback
        raise ValueError(f"cannot read MAE checkpoint {path} ({type(exc).__name__}); is it a torch .pth file?") from exc
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"MAE checkpoint {path} holds no state dict (expected {{'model': state_dict}} or a state dict)")
    return state


def load_mae_encoder(vit: VisionTransformer, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Load the encoder part of an MAE state dict into ``vit`` (decoder/mask-token keys dropped).

    Head and ``fc_norm``/``norm`` keys that one layout has and the other lacks are ignored (MAE
    fine-tuning drops ``norm`` and starts the head from scratch); every other key must match.
    """
    encoder = {key: value for key, value in state.items() if not key.startswith(DECODER_PREFIXES)}
    own = vit.state_dict()
    optional = ("head.", "fc_norm.", "norm.")
    missing = [key for key in own if key not in encoder and not key.startswith(optional)]
    wrong = [f"{key} {tuple(encoder[key].shape)} vs {tuple(own[key].shape)}"
             for key in own if key in encoder and encoder[key].shape != own[key].shape]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch {wrong[:2]}"
        raise ValueError(f"MAE {source} does not fit this ViT ({detail}); check embed_dim/depth/patch_size")
    vit.load_state_dict({key: value for key, value in encoder.items() if key in own}, strict=False)
