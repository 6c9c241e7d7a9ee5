"""How DeepSpeed writes and reads the files of our checkpoints: through `VerifiedCheckpointEngine`, which replaces its
torch checkpoint engine on our DeepSpeed engines (`install`).

- save: `torch.save`, fsync, and the file's size and sha256 recorded (`take_written`), for the manifest that
  engine/checkpoint.py gathers from every rank into checkpoint.json;
- load: only the files of the checkpoint being loaded (`expect`), each matching its manifest entry before a byte is
  unpickled, then weights-only (model/safe_load.py). Without a manifest (a foreign checkpoint) only when trusted
  (engine.trust_foreign / --trust-foreign), still weights-only.
"""

from __future__ import annotations

from pathlib import Path

from ..data.formats.paths import fsync_path
from ..model.safe_load import FileDigest, WeightsFileError, digest, load_torch_file


def make_engine_class():
    """The checkpoint engine class (built on first use: DeepSpeed is imported only where it runs)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class VerifiedCheckpointEngine(TorchCheckpointEngine):
        def __init__(self, config_params=None):
            super().__init__(config_params)
            self.name = "VerifiedCheckpointEngine"
            self.written: dict[str, FileDigest] = {}
            self.expected: tuple[Path, dict[str, FileDigest] | None, bool] | None = None
            """What loads may read (`expect`): the tag directory, its manifest (None: foreign), trust_foreign."""

        def save(self, state_dict, path: str):
            super().save(state_dict, path)
            fsync_path(Path(path))
            self.written[str(Path(path).resolve())] = digest(path)

        def load(self, path: str, map_location=None):
            if self.expected is None:
                raise WeightsFileError(f"{path}: load of a checkpoint file outside checkpoint.load; refused")
            tag_dir, manifest, trust_foreign = self.expected
            if manifest is None and not trust_foreign:
                raise WeightsFileError(f"{path}: a checkpoint without a manifest; refused without trust_foreign")
            resolved = Path(path).resolve()
            name = str(resolved.relative_to(tag_dir)) if resolved.is_relative_to(tag_dir) else None
            if manifest is not None and name not in manifest:
                raise WeightsFileError(f"{path}: not in the manifest of {tag_dir} (not saved with it); refused")
            entry = None if manifest is None else manifest[name]
            # trusted, without a manifest: maybe an older version's, read with the legacy allow-list
            return load_torch_file(path, expected=entry, map_location=map_location, legacy=manifest is None)

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
    written, root = engine.checkpoint_engine.written, tag_dir.resolve()
    mine = [path for path in written if Path(path).is_relative_to(root)]
    return {str(Path(path).relative_to(root)): written.pop(path).to_dict() for path in mine}


def expect(engine, tag_dir: Path, manifest: dict[str, FileDigest] | None, trust_foreign: bool) -> None:
    """The checkpoint the engine's next loads read from: its tag directory, its manifest (None: foreign) and whether
    a foreign one is trusted."""
    install(engine)
    engine.checkpoint_engine.expected = (tag_dir.resolve(), manifest, trust_foreign)
