"""What a CMT network's decoder reads: token and position-encoding scales and the cross-attention
mass per modality (issue 27's look inside the masked fused model; a diagnostic, not a metric).

``python -m modules.cmt.diagnostics CHECKPOINT [--scenes 16] [--data-dir ../shared/data]`` loads a
stage artifact (``cmt_model.pt``) or a Lightning checkpoint's CMT and prints, on val scenes of the
synthetic-scenes datamodule: the RMS of each modality's token content and of its PE, and per
decoder layer the mean share of the (non-DN) queries' cross-attention that falls on BEV tokens,
with all sensors and with each sensor zeroed."""

from __future__ import annotations

import argparse

import torch

from modules.cmt import CMTNetwork, drop_modalities


def rms(values: torch.Tensor) -> float:
    return float(values.float().pow(2).mean().sqrt())


@torch.no_grad()
def decoder_reading(network: CMTNetwork, batch: dict) -> dict[str, object]:
    """Scales of the keys' parts and the per-layer attention share on BEV tokens for ``batch``.

    Returns ``{"bev_content", "bev_pe", "image_content", "image_pe", "query_pe": RMS (None for an
    absent modality), "bev_share": [one mean share in [0, 1] per layer], "num_bev_tokens": int}``."""
    network.eval()
    images, points, point_mask, lidar2img = batch["images"], batch["points"], batch["point_mask"], batch["lidar2img"]
    keys, key_pos = network.tokens(images, points, point_mask, lidar2img)
    num_bev = 0
    scales: dict[str, float | None] = {"bev_content": None, "bev_pe": None, "image_content": None, "image_pe": None}
    if network.uses_lidar:
        num_bev = network.pillar_backbone(points, point_mask).shape[-2:].numel()  # BEV tokens come first
        scales["bev_content"], scales["bev_pe"] = rms(keys[:, :num_bev]), rms(key_pos[:, :num_bev])
    if network.uses_camera:
        scales["image_content"], scales["image_pe"] = rms(keys[:, num_bev:]), rms(key_pos[:, num_bev:])
    anchors = network.anchors.weight[None].expand(keys.shape[0], -1, -1)
    query_pos = network.encoding.query_pe(anchors, lidar2img=lidar2img if network.uses_camera else None,
                                          image_shape=tuple(images.shape[-2:]))
    queries, shares = torch.zeros_like(query_pos), []
    for layer in network.layers:
        # the layer's own forward, with the cross-attention weights taken on the way
        if layer.self_attention is not None:
            q = queries + query_pos
            queries = layer.norms[0](queries + layer.self_attention(q, q, queries, need_weights=False)[0])
        attended, weights = layer.cross_attention(queries + query_pos, keys + key_pos, keys, need_weights=True,
                                                  average_attn_weights=True)  # [B, Q, K], mean over heads
        shares.append(float(weights[..., :num_bev].sum(-1).mean()))
        queries = layer.norms[1](queries + attended)
        queries = layer.norms[2](queries + layer.ffn(queries))
    return {**scales, "query_pe": rms(query_pos), "bev_share": shares, "num_bev_tokens": num_bev}


def load_network(path: str) -> CMTNetwork:
    from modules.cmt import CMT

    artifact = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" in artifact and "hparams" in artifact:  # a stage artifact (CMT.save_stage_artifact)
        model = CMT(**artifact["hparams"])
        model.network.load_state_dict(artifact["state_dict"])
        return model.network
    return CMT.load_from_checkpoint(path, map_location="cpu").network


def main(argv: list[str] | None = None) -> None:
    from datamodules.synthetic_scenes import SyntheticScenesDataModule

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--scenes", type=int, default=16, help="val scenes to read (one batch)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    network = load_network(args.checkpoint)
    data = SyntheticScenesDataModule(data_dir=args.data_dir, train_size=8, val_size=args.scenes, test_size=8,
                                     batch_size=4, eval_batch_size=args.scenes)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    rows = {"all sensors": batch}
    for name, drop in (("LiDAR zeroed", "points"), ("cameras zeroed", "images")):
        flags = torch.ones(batch["images"].shape[0], dtype=torch.bool)
        images, points = drop_modalities(batch["images"], batch["points"], drop_images=flags if drop == "images" else ~flags,
                                         drop_points=flags if drop == "points" else ~flags)
        rows[name] = {**batch, "images": images, "points": points}
    for name, rows_batch in rows.items():
        reading = decoder_reading(network, rows_batch)
        scales = ", ".join(f"{key} {value:.3f}" for key, value in reading.items()
                           if key not in ("bev_share", "num_bev_tokens") and value is not None)
        share = " / ".join(f"{value:.2f}" for value in reading["bev_share"])
        print(f"{name}: RMS {scales}; attention share on the {reading['num_bev_tokens']} BEV tokens per layer {share}")


if __name__ == "__main__":
    main()
