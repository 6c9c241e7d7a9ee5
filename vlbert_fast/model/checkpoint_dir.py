"""Reading a checkpoint directory of ours without a process group: its completion marker, its manifest, which tag a
run, checkpoints or tag directory names, and whether the files are intact. The training engine writes checkpoints
(engine/checkpoint.py, engine/checkpoint_io.py); everything that loads weights (resume, init_from, export, evaluate,
attention maps, from_pretrained) finds and checks them here.

Layout (run_dir/checkpoints): `stepN/` tag directories (DeepSpeed's files of every rank, then `checkpoint.json`, the
completion marker, written last, holding the step, config and the manifest: size and sha256 of every file), and
`latest`, the tag of the newest complete checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .safe_load import FileDigest, WeightsFileError, size_problem, verify

MARKER = "checkpoint.json"
LATEST = "latest"
TAG_RE = re.compile(r"^step(\d+)$")
CLIENT_KEY = "vlbert_fast"
MANIFEST_KEY = "files"


class CheckpointError(WeightsFileError):
    """A checkpoint that is missing, incomplete, damaged or cannot be resumed here; the message says which and why."""


def manifest_of(marker: dict, source: Path) -> dict[str, FileDigest] | None:
    """The manifest a marker holds (None for a checkpoint saved without one)."""
    files = marker.get(MANIFEST_KEY)
    if files is None:
        return None
    if not isinstance(files, dict) or not files:
        raise WeightsFileError(f"{source}: '{MANIFEST_KEY}' must map file names to their size and sha256")
    return {name: FileDigest.from_dict(entry, f"{source}, file {name!r}") for name, entry in files.items()}


def damaged_file(tag_dir: Path, manifest: dict[str, FileDigest]) -> str | None:
    """'name: problem' of the first file of the checkpoint that is missing or has the wrong size (no hashing:
    cheap enough to run before choosing a checkpoint), or None."""
    for name, entry in sorted(manifest.items()):
        problem = size_problem(tag_dir / name, entry)
        if problem is not None:
            return f"{tag_dir / name}: {problem}"
    return None


def unlisted_files(tag_dir: Path, manifest: dict[str, FileDigest]) -> list[Path]:
    """Torch files in the tag directory that the manifest does not list (none was saved with the checkpoint)."""
    return sorted(p for p in tag_dir.glob("*.pt") if p.name not in manifest)


def verify_checkpoint(tag_dir: Path, manifest: dict[str, FileDigest]) -> None:
    """Every file of the manifest matches (size and sha256) and no other torch file sits beside them."""
    for name, entry in sorted(manifest.items()):
        verify(tag_dir / name, entry)
    extra = unlisted_files(tag_dir, manifest)
    if extra:
        raise WeightsFileError(f"{extra[0]}: not in the manifest of {tag_dir} (not saved with it); refused")


def tag_for(step: int) -> str:
    return f"step{step}"


def step_of(tag_dir: Path) -> int:
    match = TAG_RE.match(tag_dir.name)
    return int(match.group(1)) if match else -1


def is_complete(tag_dir: Path) -> bool:
    return (tag_dir / MARKER).is_file()


def read_marker(tag_dir: Path) -> dict:
    path = tag_dir / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint marker ({type(exc).__name__}: {exc})") from None
    if not isinstance(marker, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(marker).__name__}")
    return marker


def marker_and_manifest(tag_dir: Path, trust_foreign: bool, how_to_trust: str) -> tuple[dict | None, dict | None]:
    """The checkpoint's marker (None without one) and manifest (None for a checkpoint saved without one, which only a
    trusted load may read: otherwise a CheckpointError says so, and how to trust it: `how_to_trust`)."""
    marker = read_marker(tag_dir) if is_complete(tag_dir) else None
    manifest = None if marker is None else manifest_of(marker, tag_dir / MARKER)
    if manifest is None and not trust_foreign:
        what = f"was saved without a manifest ({MARKER} lists no files)" if marker else f"has no {MARKER}"
        raise CheckpointError(
            f"{tag_dir} {what}: it is not a checkpoint written by this version of vlbert_fast, and its files cannot "
            f"be verified, so they are not loaded. If you trust where it comes from (e.g. DeepSpeed's universal "
            f"conversion of your own checkpoint), {how_to_trust}: it then loads weights-only"
        )
    return marker, manifest


def damage(tag_dir: Path) -> str | None:
    """What makes a complete checkpoint unusable, judged cheaply (its marker, and its files' sizes against the
    manifest), or None. A checkpoint saved without a manifest is not judged here (loading it needs trust)."""
    try:
        manifest = manifest_of(read_marker(tag_dir), tag_dir / MARKER)
    except WeightsFileError as exc:
        return str(exc)
    return None if manifest is None else damaged_file(tag_dir, manifest)


def is_deepspeed_tag(path: Path) -> bool:
    return any(path.glob("*model_states.pt"))


def complete_tags(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    tags = [p for p in ckpt_dir.iterdir() if p.is_dir() and TAG_RE.match(p.name) and is_complete(p)]
    return sorted(tags, key=step_of)


def find_checkpoint(path: Path, notes: list[str] | None = None) -> Path | None:
    """The checkpoint (tag directory) that `path` names: a tag directory itself, or the `latest` complete one of a
    checkpoints directory or of a run directory. None when there is none. A damaged one (a file missing or truncated)
    is passed over for the previous complete one, with a note naming both appended to `notes`; when every complete
    checkpoint is damaged, CheckpointError."""
    path = Path(path)
    if is_complete(path) or is_deepspeed_tag(path):
        return path
    ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    tags = complete_tags(ckpt_dir)
    latest = ckpt_dir / LATEST
    if latest.is_file():
        named = ckpt_dir / latest.read_text().strip()
        if named in tags:  # `latest` lost or damaged by hand: the newest complete checkpoint still counts
            tags = tags[: tags.index(named) + 1]
    damaged = []
    for tag_dir in reversed(tags):
        problem = damage(tag_dir)
        if problem is None:
            if damaged and notes is not None:
                notes.append(
                    f"warning: checkpoint {damaged[0][0]} is damaged ({damaged[0][1]}); using the previous complete "
                    f"checkpoint {tag_dir} instead"
                    + (f" ({len(damaged) - 1} more damaged in between)" if len(damaged) > 1 else "")
                )
            return tag_dir
        damaged.append((tag_dir, problem))
    if damaged:
        raise CheckpointError(
            f"{ckpt_dir}: every complete checkpoint is damaged; the newest, {damaged[0][0]}: {damaged[0][1]}"
        )
    return None
