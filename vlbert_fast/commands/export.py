"""`vlbert-fast export RUN_OR_CHECKPOINT OUT`: consolidated fp32 weights of a training checkpoint (any ZeRO stage,
any world size; read offline on the CPU) as OUT/model.safetensors plus OUT/config.json, for
`vlbert_fast.model.from_pretrained(OUT)`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .trust import TRUST_FOREIGN_HELP

HELP = "write a checkpoint's consolidated weights as model.safetensors + config.json"
CONFIG = None


def add_arguments(parser) -> None:
    parser.add_argument(
        "source", help="a run directory, its checkpoints/ directory (uses `latest`), or a tag directory"
    )
    parser.add_argument("out", help="directory to write (created; must not hold an export already)")
    parser.add_argument("--trust-foreign", action="store_true", help=TRUST_FOREIGN_HELP)


def main(args, cfg) -> int:
    from ..model.consolidate import checkpoint_info, consolidated_state_dict, resolve_checkpoint
    from ..model.pretrained import CONFIG as CONFIG_FILE
    from ..model.pretrained import WEIGHTS, model_config_from_dict, save_pretrained
    from ..model.safe_load import WeightsFileError

    out = Path(args.out)
    if (out / WEIGHTS).exists() or (out / CONFIG_FILE).exists():
        print(f"vlbert-fast export: {out} already holds an export; choose another directory", file=sys.stderr)
        return 2
    start = time.perf_counter()
    notes: list[str] = []
    try:
        tag_dir = resolve_checkpoint(args.source, notes)
        for note in notes:
            print(note, file=sys.stderr)
        info = checkpoint_info(tag_dir, args.trust_foreign)
        model_cfg = model_config_from_dict(info["config"]["model"], str(tag_dir))
        state = consolidated_state_dict(tag_dir, args.trust_foreign)
        save_pretrained(state, model_cfg, out, metadata={"source": tag_dir.resolve(), "step": info.get("step", "")})
    except WeightsFileError as exc:  # CheckpointError, PretrainedError, a file refused or damaged
        print(f"vlbert-fast export: {exc}", file=sys.stderr)
        return 2
    numel = sum(t.numel() for t in state.values())
    print(
        f"exported {tag_dir} (step {info.get('step', '?')}): {len(state)} tensors, {numel / 1e6:.2f} M parameters, "
        f"fp32 -> {out / WEIGHTS}, {out / CONFIG_FILE} in {time.perf_counter() - start:.1f} s"
    )
    return 0
