"""A checkpoint carrying a pickled payload (os.system, as an attacker would add it to a real
mp_rank_00_model_states.pt) is refused by every entry point that loads weights, with a message naming the file, and
the payload never runs (it would create a file; the file never exists). Three ways to carry it:
- `manifest`: added after the save: the file no longer matches the manifest, so not a byte of it is unpickled;
- `rewritten`: the manifest rewritten to match the poisoned file: the weights-only unpickler refuses the global;
- `foreign`: a checkpoint without a manifest, loaded with --trust-foreign: still weights-only, refused the same way.
The entry points: export, from_pretrained, engine.init_from, resume, attention-maps, evaluate, and fine-tuning's
init_from (the loading function `finetune` calls)."""

import json
import os
import shutil
import sys

import pytest
import torch

from vlbert_fast.cli import main
from vlbert_fast.config import RunConfig, load_config
from vlbert_fast.model import VLBertForPretraining, from_pretrained
from vlbert_fast.model.checkpoint_dir import MARKER
from vlbert_fast.model.pretrained import init_weights_from
from vlbert_fast.model.safe_load import WeightsFileError, digest
from vlbert_fast.model.vlbert_finetuning import pretraining_state

from .helpers import pretrain_args, python_module, run_command

pytestmark = pytest.mark.slow  # two small training runs and three resume launches, about a minute on 2 cores

VARIANTS = ["manifest", "rewritten", "foreign"]
ENTRY_POINTS = ["export", "from_pretrained", "init_from", "resume", "attention_maps", "evaluate", "finetune_init_from"]
# What the refusal says: a file that changed since its manifest, or a global the weights-only unpickler refuses.
REFUSALS = {"manifest": "changed since it was saved", "rewritten": "holds objects beyond plain weights"}
REFUSALS["foreign"] = REFUSALS["rewritten"]


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_config, ds_env):
    """A tiny pretraining run (ZeRO-1: model states and optimizer partitions) and a tiny VQA fine-tuning run."""
    root = tmp_path_factory.mktemp("clean")
    pretrain = python_module(
        pretrain_args(tiny_config, root / "pretrain", "train.max_steps=2", "engine.zero_stage=1"), ds_env
    )
    assert pretrain.returncode == 0, pretrain.tail()
    finetune = [
        *(sys.executable, "-m", "vlbert_fast", "finetune", "--task", "vqa", "init_from="),
        *("model.hidden_size=32", "model.num_attention_heads=2", "model.intermediate_size=64"),
        *("vqa.synth.train_images=32", "vqa.synth.val_images=16", "vqa.synth.corpus_lines=32"),
        *("train.global_batch_size=8", "train.micro_batch_size=8", "train.max_steps=1", f"run_dir={root / 'vqa'}"),
    ]
    result = run_command(finetune, ds_env)
    assert result.returncode == 0, result.tail()
    return root


def poison(run: object, out, variant: str, marker) -> object:
    """A copy of `run` whose newest checkpoint's model states carry the payload, as `variant` says."""
    shutil.copytree(run, out)
    tag = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    path = tag / "mp_rank_00_model_states.pt"
    states = torch.load(path, weights_only=False)  # our own clean file, read here to add the attacker's object
    states["extra"] = Payload(marker)
    torch.save(states, path)
    marker_file = tag / MARKER
    saved = json.loads(marker_file.read_text())
    if variant == "rewritten":
        saved["files"][path.name] = digest(path).to_dict()
    elif variant == "foreign":
        del saved["files"]  # a checkpoint of an older version: no manifest, loads only when trusted
    marker_file.write_text(json.dumps(saved))
    return out


def load_through(entry: str, run, variant: str, tmp_path, ds_env, capsys) -> str:
    """Loads the poisoned `run` through `entry`; returns the error message (the load must fail)."""
    trust = variant == "foreign"
    flag = ["--trust-foreign"] if trust else []
    if entry in ("export", "attention_maps", "evaluate"):
        argv = {
            "export": ["export", str(run), str(tmp_path / "export")],
            "attention_maps": ["attention-maps", "--out", str(tmp_path / "maps"), "--checkpoint", str(run)],
            "evaluate": ["evaluate", str(run)],
        }[entry]
        assert main([*argv, *flag]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err
    if entry == "resume":
        overrides = ["train.max_steps=3", *(["engine.trust_foreign=true"] if trust else [])]
        config = run / "config.yaml"
        result = python_module(["pretrain", "--config", str(config), f"run_dir={run}", *overrides], ds_env)
        assert result.returncode == 2, result.tail()
        assert "Traceback" not in result.output, result.tail()
        return result.output
    model_cfg = load_config(RunConfig, [run / "config.yaml"]).model
    with pytest.raises(WeightsFileError) as info:
        if entry == "from_pretrained":
            from_pretrained(run, trust_foreign=trust)
        elif entry == "init_from":
            init_weights_from(VLBertForPretraining(model_cfg), run, trust_foreign=trust)
        else:
            pretraining_state(run, model_cfg, trust_foreign=trust)
    return str(info.value)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_pickled_payload_is_refused_and_never_runs(entry, variant, runs, tmp_path, ds_env, capsys):
    marker = tmp_path / "payload_ran"
    source = runs / ("vqa" if entry == "evaluate" else "pretrain")
    run = poison(source, tmp_path / "run", variant, marker)
    message = load_through(entry, run, variant, tmp_path, ds_env, capsys)
    assert "mp_rank_00_model_states.pt" in message, message
    assert REFUSALS[variant] in message, message
    assert not marker.exists(), "the payload ran"


def test_without_the_payload_the_same_loads_work(runs, tmp_path, capsys):
    """The control: the clean runs load through the in-process entry points (so the refusals above are the payload's),
    and a checkpoint without a manifest needs --trust-foreign."""
    assert main(["export", str(runs / "pretrain"), str(tmp_path / "export")]) == 0
    model = from_pretrained(runs / "pretrain")
    assert torch.equal(
        model.state_dict()["vlbert.embeddings.word_embeddings.weight"],
        from_pretrained(tmp_path / "export").state_dict()["vlbert.embeddings.word_embeddings.weight"],
    )
    foreign = tmp_path / "foreign"
    shutil.copytree(runs / "pretrain", foreign)
    tag = foreign / "checkpoints" / "step2"
    marker = json.loads((tag / MARKER).read_text())
    del marker["files"]
    (tag / MARKER).write_text(json.dumps(marker))
    with pytest.raises(WeightsFileError, match="saved without a manifest .* --trust-foreign"):
        from_pretrained(foreign)
    assert from_pretrained(foreign, trust_foreign=True) is not None
    assert main(["evaluate", str(runs / "vqa"), "--out", str(tmp_path / "eval")]) == 0
