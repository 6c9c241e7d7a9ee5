"""How checkpoint files are written and read: durably, with a manifest, weights-only.

`VerifiedCheckpointEngine` replaces DeepSpeed's torch checkpoint engine on our DeepSpeed engines
(`install(engine)`; DeepSpeed writes and reads every file of a checkpoint through its checkpoint engine):
- save: `torch.save`, then fsync, then the file's size and sha256 are recorded (`take_written`), so that
  checkpoint.save can gather every rank's files into the manifest of checkpoint.json;
- load: the file must be in the manifest of the checkpoint being loaded (`expect`) and match it, before a byte is
  unpickled; then it loads weights-only (model/safe_load.py). A checkpoint without a manifest (a foreign one, such as
  DeepSpeed's universal conversion) loads only when trusted (engine.trust_foreign / --trust-foreign), still
  weights-only.

The manifest: {"files": {name relative to the tag directory: {"size": bytes, "sha256": hex}}} inside checkpoint.json,
the completion marker written last (engine/checkpoint.py).
"""

from __future__ import annotations

from pathlib import Path

from ..data.formats.paths import fsync_path
from ..model.safe_load import FileDigest, WeightsFileError, digest, load_torch_file


class _Expectation:
    """What the next load may read: the tag directory, its manifest (None: foreign), and whether foreign is trusted."""

    def __init__(self, tag_dir: Path, manifest: dict[str, FileDigest] | None, trust_foreign: bool):
        self.tag_dir = tag_dir.resolve()
        self.manifest = manifest
        self.trust_foreign = trust_foreign

    def check(self, path: Path) -> FileDigest | None:
        if self.manifest is None:
            if not self.trust_foreign:
                raise WeightsFileError(f"{path}: a checkpoint without a manifest; refused without trust_foreign")
            return None
        try:
            name = str(path.resolve().relative_to(self.tag_dir))
        except ValueError:
            name = None
        if name is None or name not in self.manifest:
            raise WeightsFileError(f"{path}: not in the manifest of {self.tag_dir} (not saved with it); refused")
        return self.manifest[name]


def make_engine_class():
    """The checkpoint engine class (built on first use: DeepSpeed is imported only where it runs)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class VerifiedCheckpointEngine(TorchCheckpointEngine):
        def __init__(self, config_params=None):
            super().__init__(config_params)
            self.name = "VerifiedCheckpointEngine"
            self.written: dict[str, FileDigest] = {}
            self.expectation: _Expectation | None = None

        def save(self, state_dict, path: str):
            super().save(state_dict, path)
            fsync_path(Path(path))
            self.written[str(Path(path).resolve())] = digest(path)

        def load(self, path: str, map_location=None):
            if self.expectation is None:
                raise WeightsFileError(f"{path}: load of a checkpoint file outside checkpoint.load; refused")
            expected = self.expectation.check(Path(path))
            legacy = self.expectation.manifest is None  # trusted, without a manifest: maybe an older version's
            return load_torch_file(path, expected=expected, map_location=map_location, legacy=legacy)

    return VerifiedCheckpointEngine


def install(engine) -> None:
    """Replaces the DeepSpeed engine's checkpoint engine with ours (after deepspeed.initialize); idempotent, and
    called again by every save and load, so no engine ever reads a checkpoint file through DeepSpeed's own
    (weights_only=False) loader."""
    old = engine.checkpoint_engine
    if getattr(old, "name", None) == "VerifiedCheckpointEngine":
        return
    new = make_engine_class()(None)
    new.zipfile_serialization = getattr(old, "zipfile_serialization", True)
    engine.checkpoint_engine = new


def take_written(engine, tag_dir: Path) -> dict[str, dict]:
    """The files this rank wrote into `tag_dir` since the last call: {relative name: {size, sha256}}."""
    written = engine.checkpoint_engine.written
    root = tag_dir.resolve()
    out = {}
    for path, entry in list(written.items()):
        relative = Path(path).relative_to(root) if Path(path).is_relative_to(root) else None
        if relative is not None:
            out[str(relative)] = entry.to_dict()
            del written[path]
    return out


def expect(engine, tag_dir: Path, manifest: dict[str, FileDigest] | None, trust_foreign: bool) -> None:
    """The checkpoint the engine's next loads read from (see _Expectation)."""
    install(engine)
    engine.checkpoint_engine.expectation = _Expectation(tag_dir, manifest, trust_foreign)
