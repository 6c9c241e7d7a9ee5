"""`vlbert-fast synth --out DIR [KEY=VALUE ...]`: write the synthetic world (images, captions, region features in
every supported format, a text corpus, a WordPiece vocabulary) into a new directory."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..config import SynthConfig

HELP = "generate the synthetic world in the real data formats"
CONFIG = SynthConfig


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory to create (must not exist)")


def main(args, cfg: SynthConfig) -> int:
    from ..data.synth import generate

    start = time.perf_counter()
    try:
        out = generate(cfg, Path(args.out))
    except FileExistsError as exc:
        print(f"vlbert-fast synth: {exc}", file=sys.stderr)
        return 2
    world = json.loads((out / "world.json").read_text())
    counts = world["counts"]
    print(
        f"wrote {out}: {counts['train']} training and {counts['val']} held-out images with captions, "
        f"{counts['corpus']} corpus lines, {world['num_classes']} detector classes, in "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0
