"""`vlbert-fast attention-maps --out DIR [--checkpoint PATH] [--image-id ID --caption TEXT ...]`: per-layer,
per-head attention over the text and the RoIs of given inputs, as PNG heatmaps and raw arrays.

The model: `--checkpoint` names an export, a run directory (its config.yaml sets the data, its checkpoints/latest
the weights), a checkpoint folder (with `latest`, or one tag's folder) or a state-dict file (.safetensors, .pt), read
through the one resolver (model/pretrained.py `resolve_weights`): a checkpoint of ours is verified against its
manifest and consolidated (any ZeRO stage; the fp32 masters of a bf16/fp16 run), anything else that is pickled (a .pt
file, a DeepSpeed folder without our manifest) loads only with `--trust-foreign`, and always weights-only. Without
it the model is randomly initialised from the config (`--config`, overrides; seed `seed`). The inputs: each
`--image-id` names an image whose regions are in the data root's feature shards (`data.root`, default the synthetic
world) with its `--caption` (the i-th caption goes with the i-th image; without captions each image's own caption from
the captions files is used); without either, the first held-out caption. Samples are built as training builds them,
without masking.

The maps come from the padded reference path (plain PyTorch attention, which returns its probabilities), in eval
mode. Written per sample under DIR/<i>_<image id>/:
- attention.npz: `probs` [layers, heads, n, n] float32 (row i: how query token i spreads over the n keys),
  `tokens` (labels), `token_kind` (TokenKind values), `boxes` [R, 4], `caption`, `image_id`;
- layerLL_headHH.png: one heatmap per layer and head, queries down, keys across, tokens labelled, thin lines between
  the text, the RoIs and [END]; each map's colours span 0 to its own maximum (printed in its corner).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..config import RunConfig, load_config
from .trust import TRUST_FOREIGN_HELP

HELP = "draw per-layer, per-head attention over text and RoIs as PNG heatmaps (and raw arrays)"
CONFIG = RunConfig


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory to write the maps into (created if missing)")
    parser.add_argument(
        "--checkpoint", default=None, help="export, run directory, checkpoint or state-dict file (default: random init)"
    )
    parser.add_argument(
        "--image-id",
        action="append",
        default=[],
        help="an image whose regions are in the data root's feature shards, by the id they are stored under: the file "
        "stem of the image path in the captions file (`images/val/12.png` and `a.zip@/x/12.jpg` -> 12; repeatable)",
    )
    parser.add_argument("--caption", action="append", default=[], help="caption of the i-th image (repeatable)")
    parser.add_argument("--cell", type=int, default=12, help="pixels per attention cell (default 12)")
    parser.add_argument("--trust-foreign", action="store_true", help=TRUST_FOREIGN_HELP)


def resolve_config(args, cfg: RunConfig) -> RunConfig:
    """A run directory's own config.yaml replaces the defaults; --config files and overrides still apply on top."""
    if args.checkpoint and (Path(args.checkpoint) / "config.yaml").is_file():
        return load_config(RunConfig, [Path(args.checkpoint) / "config.yaml", *args.config], args.overrides)
    return cfg


def main(args, cfg: RunConfig) -> int:
    from ..model.attention_heatmaps import build_samples, load_model, write_maps
    from ..model.safe_load import WeightsFileError

    try:
        cfg = resolve_config(args, cfg)
        model, source = load_model(cfg, args.checkpoint, args.trust_foreign)
    except (ValueError, FileNotFoundError, WeightsFileError) as exc:
        print(f"vlbert-fast attention-maps: --checkpoint {exc}", file=sys.stderr)
        return 2
    try:
        _, tokenizer, samples = build_samples(cfg, args.image_id, args.caption)
    except (ValueError, FileNotFoundError) as exc:
        print(f"vlbert-fast attention-maps: {exc}", file=sys.stderr)
        return 2
    print(f"model: {'weights from ' + str(source) if source else 'random initialisation (no --checkpoint)'}")
    for line in write_maps(model, tokenizer, samples, Path(args.out), args.cell):
        print(line)
    return 0
