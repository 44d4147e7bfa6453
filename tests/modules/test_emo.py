"""EMO: official 224² sizes, the dilated-window attention against a loop reference, the small-image
geometry of EMO and of the timm baselines, and the training recipe (schedule, weight-decay groups)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn

from modules.common.classification import count_macs, count_parameters
from modules.emo import EMOClassifier, SmallImageTimmClassifier
from modules.emo.blocks import (OFFICIAL_224_FVCORE_GFLOPS, OFFICIAL_224_PARAMS_M, InvertedResidualMobileBlock,
                                create_emo, window_partition, window_reverse)


def fvcore_norm_flops(network: nn.Module, input_shape: tuple[int, ...]) -> int:
    """What fvcore adds on top of convs/matmuls in eval mode: 2 FLOPs per BatchNorm output element
    (affine eval BN) and 5 per LayerNorm element (its 'rough estimate'); pooling means are ignored."""
    total = 0

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * (5 if isinstance(module, LayerNorm2d) else 2)

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, (nn.BatchNorm2d, LayerNorm2d))]
    with torch.no_grad():
        network.eval()(torch.zeros(input_shape))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("variant", sorted(OFFICIAL_224_PARAMS_M))
def test_224_params_exact_and_flops_match_official_fvcore(variant: str) -> None:
    network = create_emo(variant, num_classes=1000)
    # fvcore parameter_count of the official models, printed to 3 decimals (M) in the logs.
    assert count_parameters(network) / 1e6 == pytest.approx(OFFICIAL_224_PARAMS_M[variant], abs=5e-4)
    macs = count_macs(network, (1, 3, 224, 224))
    fvcore_gflops = (macs + fvcore_norm_flops(network, (1, 3, 224, 224))) / 1e9
    # Published to 3 decimals: within half a unit of the last digit plus 0.1 MFLOP of float slack.
    assert fvcore_gflops == pytest.approx(OFFICIAL_224_FVCORE_GFLOPS[variant], abs=6e-4)
    # The suite's counter (no norms) is therefore a little below fvcore's figure.
    assert 0.97 < macs / 1e9 / OFFICIAL_224_FVCORE_GFLOPS[variant] < 0.995


def test_emo_1m_parameters_exact() -> None:
    assert count_parameters(create_emo("emo_1m", num_classes=1000)) == 1_361_168


def test_block_shapes_follow_the_paper_spec_example() -> None:
    network = create_emo("emo_1m")
    stage3 = network.stages[2]
    downsample, block = stage3[0], stage3[1]
    # Downsampling block: 48 → 1×1 to 2λ·48 = 288 → DW5×5 stride 2 → 1×1 to 80, no attention, no skip.
    assert (downsample.v[0].in_channels, downsample.v[0].out_channels) == (48, 288)
    assert downsample.conv_local[0].stride == (2, 2) and downsample.conv_local[0].kernel_size == (5, 5)
    assert downsample.qk is None and not downsample.has_skip and downsample.proj.out_channels == 80
    # Attention block: LN, 4 heads × 20 on the 80 input channels, then 1×1 80→240 + GELU, DW5×5, 1×1 240→80.
    assert isinstance(block.norm, LayerNorm2d) and block.norm.eps == 1e-6
    assert block.num_heads == 4 and block.qk.out_channels == 160 and block.qk.bias is not None
    assert (block.v[0].in_channels, block.v[0].out_channels) == (80, 240) and isinstance(block.v[1], nn.GELU)
    assert block.conv_local[0].groups == 240 and isinstance(block.conv_local[2], nn.SiLU)  # BN+SiLU even here
    assert block.proj.bias is None and block.has_skip
    assert network.stages[3][1].num_heads == 8  # 168 / 21
    # Stem block: DW3×3 + BN + SiLU, SE with reduction ratio 1.0, 1×1 24→24, no norm, no skip.
    stem_block = network.stem_block
    assert isinstance(stem_block.v, nn.Identity) and isinstance(stem_block.norm, nn.Identity)
    assert stem_block.se.conv_reduce.out_channels == 24 and not stem_block.has_skip
    # Drop-path rises linearly to 0.04036 over the 15 blocks of stages 1-4.
    assert network.stages[3][2].drop_path.drop_prob == pytest.approx(0.04036)


def test_dilated_partition_groups_pixels_with_the_grid_stride() -> None:
    image = torch.arange(16.0).view(1, 1, 4, 4)
    windows, grid = window_partition(image, 2, "dilated")
    assert grid == (2, 2)
    # Window (a, b) holds the pixels (i, j) with i mod 2 = a, j mod 2 = b: a stride-2 grid.
    assert windows[0, 0].tolist() == [[0, 2], [8, 10]]
    assert windows[1, 0].tolist() == [[1, 3], [9, 11]]
    assert windows[2, 0].tolist() == [[4, 6], [12, 14]]
    contiguous, _ = window_partition(image, 2, "contiguous")
    assert contiguous[1, 0].tolist() == [[2, 3], [6, 7]]
    for layout in ("dilated", "contiguous"):
        x = torch.randn(2, 3, 8, 12)
        parts, grid = window_partition(x, 4, layout)
        assert torch.equal(window_reverse(parts, grid, layout), x)


def reference_window_attention(block: InvertedResidualMobileBlock, x: torch.Tensor) -> torch.Tensor:
    """Per-window loop with explicit softmax(q kᵀ/√d) on the zero-padded map (official semantics)."""
    batch, channels, height, width = x.shape
    ws, heads, dim = block.window_size, block.num_heads, block.head_dim
    padded = F.pad(x, (0, (-width) % ws, 0, (-height) % ws))
    grid_h, grid_w = padded.shape[2] // ws, padded.shape[3] // ws
    w_qk, b_qk = block.qk.weight[:, :, 0, 0], block.qk.bias
    w_v, b_v, act = block.v[0].weight[:, :, 0, 0], block.v[0].bias, block.v[1]
    out = torch.zeros(batch, w_v.shape[0], *padded.shape[2:])
    for b in range(batch):
        for a in range(grid_h):
            for c in range(grid_w):
                if block.window_layout == "dilated":
                    rows, cols = torch.arange(a, padded.shape[2], grid_h), torch.arange(c, padded.shape[3], grid_w)
                else:
                    rows, cols = torch.arange(a * ws, (a + 1) * ws), torch.arange(c * ws, (c + 1) * ws)
                tokens = padded[b][:, rows][:, :, cols].reshape(channels, -1).T  # [N, C]
                qk = tokens @ w_qk.T + b_qk
                values = tokens if block.attn_pre else act(tokens @ w_v.T + b_v)
                value_dim = values.shape[1] // heads
                mixed = torch.zeros_like(values)
                for h in range(heads):
                    q, k = qk[:, h * dim:(h + 1) * dim], qk[:, channels + h * dim:channels + (h + 1) * dim]
                    attention = torch.softmax(q @ k.T / math.sqrt(dim), dim=-1)
                    mixed[:, h * value_dim:(h + 1) * value_dim] = attention @ values[:, h * value_dim:(h + 1) * value_dim]
                result = act(mixed @ w_v.T + b_v) if block.attn_pre else mixed
                out[b][:, rows[:, None], cols[None, :]] = result.T.reshape(-1, ws, ws)
    return out[:, :, :height, :width]


@pytest.mark.parametrize("size", [8, 6])  # 6: padded to 8 with unmasked zero tokens
@pytest.mark.parametrize("layout,attn_pre", [("dilated", True), ("dilated", False), ("contiguous", True)])
def test_window_attention_matches_loop_reference(size: int, layout: str, attn_pre: bool) -> None:
    torch.manual_seed(0)
    block = InvertedResidualMobileBlock(8, 8, expansion=2.0, norm="ln", act="gelu", dw_kernel=5, head_dim=4,
                                        window_size=4, window_layout=layout, attn_pre=attn_pre).eval()
    x = torch.randn(2, 8, size, size)
    with torch.no_grad():
        assert torch.allclose(block.window_attention(x), reference_window_attention(block, x), atol=1e-5)


def test_small_image_geometry_keeps_the_224_attention_pattern() -> None:
    network = create_emo("emo_1m", num_classes=10, small_images=True)
    sizes = []
    handles = [stage.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for stage in network.stages]
    network.eval()(torch.zeros(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert sizes == [32, 16, 8, 4]  # stem 32, output stride 8
    # Window 4: stage 3 (8×8) → 2×2 dilated grids of stride 2 (as 14/7 at 224²), stage 4 global.
    assert network.stages[2][1].window_size == network.stages[3][1].window_size == 4
    assert count_parameters(network) == 1_193_858  # the 1000-class head swapped for 10 classes
    assert count_macs(network, (1, 3, 32, 32)) / 1e6 == pytest.approx(69.07, abs=0.01)


@pytest.mark.parametrize("model_name,params", [("mobilenetv2_075", 1_368_234), ("mobilevit_xxs", 954_234)])
def test_timm_baselines_get_the_same_surgery(model_name: str, params: int) -> None:
    classifier = SmallImageTimmClassifier(model_name=model_name, num_classes=10, image_size=32)
    assert len(classifier.strides_removed_at) == 2
    assert count_parameters(classifier.network) == params  # strides only: no parameter changes
    features = classifier.network.eval().forward_features(torch.zeros(1, 3, 32, 32))
    assert features.shape[-2:] == (4, 4)  # output stride 8, like EMO's small-image geometry


def test_emo_1m_needs_fewer_macs_than_mobilevit_xxs_at_32() -> None:
    emo = EMOClassifier(variant="emo_1m").network
    mobilevit = SmallImageTimmClassifier(model_name="mobilevit_xxs").network
    assert count_macs(emo, (1, 3, 32, 32)) < count_macs(mobilevit, (1, 3, 32, 32))


def test_noattn_ablation_drops_exactly_the_qk_convs() -> None:
    full = create_emo("emo_1m")
    ablation = create_emo("emo_1m", attention=(False,) * 4)
    qk_params = sum(count_parameters(block.qk) for stage in full.stages for block in stage if block.qk is not None)
    assert qk_params == 7 * (80 * 160 + 160) + 2 * (168 * 336 + 336)  # 7 + 2 attention blocks
    assert count_parameters(full) - count_parameters(ablation) == qk_params


def _with_stub_trainer(module: EMOClassifier, *, steps: int, epochs: int) -> dict:
    module._trainer = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=epochs)
    return module.configure_optimizers()


def test_recipe_warmup_cosine_and_weight_decay_groups() -> None:
    module = EMOClassifier(variant="emo_1m_half", lr=2e-3, warmup_epochs=1, warmup_lr=1e-6, min_lr=1e-5)
    config = _with_stub_trainer(module, steps=100, epochs=10)
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lr_at = {}
    for step in (0, 5, 10, 50, 100):
        scheduler.step_update(num_updates=step)
        lr_at[step] = optimizer.param_groups[0]["lr"]
    assert lr_at[0] == pytest.approx(1e-6)
    assert lr_at[5] == pytest.approx(1e-6 + 0.5 * (2e-3 - 1e-6))  # linear warm-up over 10 steps
    # timm cosine over all 100 steps (warm-up not prefixed): lr_min + ½(lr − lr_min)(1 + cos(π t / T)).
    assert lr_at[10] == pytest.approx(1e-5 + 0.5 * (2e-3 - 1e-5) * (1 + math.cos(math.pi * 0.1)))
    assert lr_at[50] == pytest.approx((2e-3 + 1e-5) / 2)
    assert lr_at[100] == pytest.approx(1e-5)
    decayed = [group for group in optimizer.param_groups if group["weight_decay"] > 0]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == 0.05
    assert all(p.ndim > 1 for p in decayed[0]["params"])  # no decay on biases and norm weights
    assert sum(p.numel() for p in decayed[0]["params"]) == sum(
        m.weight.numel() for m in module.network.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_ema_weights_are_the_evaluated_ones() -> None:
    module = EMOClassifier(variant="emo_1m_half", ema_decay=0.5)
    with torch.no_grad():
        module.network.head.bias.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # EMA = ½ old + ½ new
    images = torch.randn(2, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        raw = module.network(images)
        evaluated = module(images)
    assert torch.allclose(raw - evaluated, torch.full_like(raw, 0.5), atol=1e-5)


@pytest.mark.slow
def test_tiny_training_beats_chance() -> None:
    """EMO-1M/2 on 16² generated gratings (stage 4 is 2×2, zero-padded to one 4×4 window): 40 AdamW
    steps of 64 images must clearly beat chance (0.1) on 200 held-out images. (Eval-mode accuracy
    stays at chance for ~25 steps while the BN running statistics catch up; 0.80 at 40 steps.)"""
    from datamodules.image_sources import generate_gratings

    torch.manual_seed(0)
    data = generate_gratings(num_images=600, image_size=16, seed=0)
    images = (data.images.float() / 255 - 0.5) / 0.25
    module = EMOClassifier(variant="emo_1m_half", image_size=16, label_smoothing=0.0)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=0.05)
    module.train()
    for _ in range(40):
        batch = torch.randint(0, 400, (64,))
        loss = F.cross_entropy(module(images[batch]), data.labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        accuracy = (module(images[400:]).argmax(1) == data.labels[400:]).float().mean().item()
    assert accuracy > 0.5


def _layout_sensitive_conv_weights(network: nn.Module) -> list[torch.Tensor]:
    """Conv weights whose NCHW and NHWC layouts differ (more than one input channel and a k > 1)."""
    return [m.weight for m in network.modules()
            if isinstance(m, nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]


@pytest.mark.parametrize("make", [lambda: EMOClassifier(variant="emo_1m_half"),
                                  lambda: SmallImageTimmClassifier(model_name="mobilevit_xxs")])
def test_speed_options_channels_last_and_fused_adamw_keep_the_function(make) -> None:
    torch.manual_seed(0)
    module = make()
    convs = _layout_sensitive_conv_weights(module.network)
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    optimizer = _with_stub_trainer(module, steps=10, epochs=1)["optimizer"]
    assert optimizer.defaults["fused"] is True
    # The same weights in NCHW give the same logits: a layout change, not a different function.
    reference = make()
    reference.network.load_state_dict(module.network.state_dict())
    reference.channels_last = False
    reference.network = reference.network.to(memory_format=torch.contiguous_format)
    images = torch.randn(4, 3, 32, 32)
    module.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(module(images), reference(images), atol=1e-4)
    plain = type(module)(**{**dict(module.hparams), "channels_last": False, "fused_adamw": False})
    assert not any(w.is_contiguous(memory_format=torch.channels_last) for w in _layout_sensitive_conv_weights(plain.network))
    assert not _with_stub_trainer(plain, steps=10, epochs=1)["optimizer"].defaults["fused"]
