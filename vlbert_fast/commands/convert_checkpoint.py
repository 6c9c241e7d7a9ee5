"""`vlbert-fast convert-checkpoint SOURCE OUT`: one of the original VL-BERT's released checkpoints
(vl-bert-{base,large}-{prec,e2e}.model, github.com/jackroos/VL-BERT) as our export, OUT/model.safetensors +
OUT/config.json, read weights-only (vlbert_fast/model/original_checkpoint.py), with a report of the mapped, new and
unused tensors. The export then serves `init_from` (fine-tuning) and `engine.init_from` (pretraining).

Exit codes: 0 written; 2 a source that cannot be read or converted, or OUT already holding an export.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HELP = "convert an original VL-BERT checkpoint (*.model) into our export (model.safetensors + config.json)"
CONFIG = None


def add_arguments(parser) -> None:
    parser.add_argument("source", help="the original's checkpoint file, e.g. vl-bert-base-e2e.model")
    parser.add_argument("out", help="directory to write (created; must not hold an export already)")
    parser.add_argument(
        "--bert",
        metavar="DIR",
        default=None,
        help="a Hugging Face BERT directory whose pooler to add (the original's VCR starts from BERT's pooler; the "
        "released pretraining checkpoints have none)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="FIELD=VALUE",
        help="model config fields the tensors do not tell, e.g. model.num_attention_heads=16 (default: hidden / 64)",
    )


def main(args, cfg) -> int:
    from ..model.original_checkpoint import OriginalCheckpointError, convert_original_checkpoint
    from ..model.pretrained import CONFIG as CONFIG_FILE
    from ..model.pretrained import WEIGHTS, PretrainedError

    out = Path(args.out)
    if (out / WEIGHTS).exists() or (out / CONFIG_FILE).exists():
        print(
            f"vlbert-fast convert-checkpoint: {out} already holds an export; choose another directory", file=sys.stderr
        )
        return 2
    start = time.perf_counter()
    try:
        report = convert_original_checkpoint(args.source, out, args.overrides, bert=args.bert)
    except (OriginalCheckpointError, PretrainedError, OSError) as exc:
        print(f"vlbert-fast convert-checkpoint: {exc}", file=sys.stderr)
        return 2
    print(report)
    print(f"wrote {out / WEIGHTS} and {out / CONFIG_FILE} in {time.perf_counter() - start:.1f} s")
    return 0
