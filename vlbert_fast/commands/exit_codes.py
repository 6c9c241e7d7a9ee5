"""Exit codes of the commands, in one place: 0 done; 1 aborted (too many non-finite steps, non-finite weights, a
failed rank: the message says which); 2 a config, data, checkpoint, weights or run directory the command cannot
use. Either failure prints one message (naming the file where a file is at fault) and no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


def unusable_input_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the input is unusable" (exit code 2)."""
    from ..config import ConfigError
    from ..data.batch import InvalidBatchError
    from ..data.formats import FormatError
    from ..data.pretrain_loader import DataConfigError
    from ..engine.run_lock import RunDirLocked
    from ..model.hf_bert import BertLoadError
    from ..model.resnet_weights import ResNetLoadError
    from ..model.safe_load import WeightsFileError
    from ..tokenization import TokenizerError

    # WeightsFileError covers CheckpointError and PretrainedError (their base).
    return (
        ConfigError,
        DataConfigError,
        FormatError,
        InvalidBatchError,
        TokenizerError,
        WeightsFileError,
        BertLoadError,
        ResNetLoadError,
        RunDirLocked,
        FileNotFoundError,
    )


def run_job(command: str, job: Callable[[], object], extra: tuple[type[BaseException], ...] = ()) -> int:
    """Runs a training job and maps its failure to an exit code with one message on stderr (module docstring);
    `extra`: more exception types this command counts as unusable input."""
    from ..engine.guards import TrainingAborted

    try:
        job()
    except TrainingAborted as exc:
        print(f"vlbert-fast {command}: aborted: {exc}", file=sys.stderr, flush=True)
        return 1
    except (*unusable_input_errors(), *extra) as exc:
        print(f"vlbert-fast {command}: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
