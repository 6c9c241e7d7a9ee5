"""Fine-tuning on 2 ranks with ZeRO-3 (torchrun, gloo): every rank calls the head once per forward, including the
evaluation's padded last batches (ZeRO-3 gathers parameters in forward hooks, so ranks that called different
modules would hang), and the gathered val accuracy equals `vlbert-fast evaluate` on the consolidated checkpoint."""

import json

from .helpers import python_module, torchrun

SMALL = [
    "model.hidden_size=32",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
    "model.geometry_dim=64",
    "vqa.synth.train_images=64",
    "vqa.synth.val_images=32",
    "vqa.synth.corpus_lines=64",
    "train.global_batch_size=16",
    "train.micro_batch_size=4",
    "train.eval_batch_size=5",  # 42 val questions: 21 per rank, batches of 5, 5, 5, 5, 1
    "train.max_steps=4",
    "train.log_every=2",
    "engine.zero_stage=3",
    "engine.cpu_threads=1",
    "engine.dist_timeout_s=60",
    "init_from=",
]


def test_zero3_finetune_and_evaluate(ds_env, tmp_path):
    run_dir = tmp_path / "run"
    result = torchrun(["finetune", "--task", "vqa", f"run_dir={run_dir}", *SMALL], ds_env)
    assert result.returncode == 0, result.tail()
    assert "world size 2 | ZeRO-3 | accumulation 2" in result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4
    evaluated = python_module(["evaluate", str(run_dir)], ds_env)
    assert evaluated.returncode == 0, evaluated.tail()
    offline = json.loads((run_dir / "eval" / "val" / "metrics_val.json").read_text())
    assert offline["samples"] == summary["val_samples"]
    assert abs(offline["accuracy"] - summary["val"]["accuracy"]) < 1e-9
    predictions = json.loads(open(summary["predictions"]).read())
    assert len(predictions) == summary["val_samples"] == len({p["question_id"] for p in predictions})
