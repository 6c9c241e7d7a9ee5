"""The VQA learning test: `vlbert-fast finetune --task vqa` with no config (the embedded default: the tiny model on
the synthetic VQA) from the session's embedded-default pretraining run answers colour, shape and count questions
about the held-out images far better than chance, than the most frequent answer, and than the best answer per
question template (what the question alone can tell).

Measured on 2 loaded cores (seed 0), from the embedded pretraining run, with the current official accuracy: 82.0% on
the 400 held-out questions (colour/shape 76.7%, counts 100%) in 1013 s of training on a machine loaded by other jobs;
the best answer per question template scores 45.6% (the noisy human answers give wrong answers partial credit), the
most frequent answer 19.5%.
The assertions leave about a third of the margin over the per-template baseline as slack.
"""

import json
from collections import Counter

import pytest

from vlbert_fast.config.tasks import VQAOptions
from vlbert_fast.tasks.vqa.answers import answer_accuracy
from vlbert_fast.tasks.vqa.formats import read_annotations
from vlbert_fast.tasks.vqa.synth import cached_synth_vqa

from ..shared import output_tail, run_cli


@pytest.fixture(scope="module")
def vqa_run(pretrained_default, synth_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("vqa") / "run"
    args = ["finetune", "--task", "vqa", f"init_from={pretrained_default}", f"run_dir={run_dir}"]
    result = run_cli(args, synth_cache, timeout=1200)
    assert result.returncode == 0, output_tail(result)
    return run_dir, result.stdout


def baselines(root) -> dict[str, float]:
    """Val accuracy of the most frequent training answer, and of the most frequent training answer of each question
    template (the question's first three words)."""
    train = read_annotations(root / "v2_mscoco_train2014_annotations.json").values()
    val = read_annotations(root / "v2_mscoco_val2014_annotations.json").values()
    majority = Counter(a.multiple_choice_answer for a in train).most_common(1)[0][0]
    per_type: dict[str, Counter] = {}
    for a in train:
        per_type.setdefault(a.question_type, Counter())[a.multiple_choice_answer] += 1
    best = {t: c.most_common(1)[0][0] for t, c in per_type.items()}
    return {
        "majority": sum(answer_accuracy(majority, a.answers) for a in val) / len(val),
        "per_template": sum(answer_accuracy(best[a.question_type], a.answers) for a in val) / len(val),
    }


def test_vqa_beats_chance_and_the_text_only_baselines(vqa_run, synth_cache):
    run_dir, stdout = vqa_run
    summary = json.loads((run_dir / "summary.json").read_text())
    val = summary["val"]
    base = baselines(cached_synth_vqa(VQAOptions(), synth_cache))
    print(f"VQA val {val}, baselines {base}, {summary['train_seconds']:.0f} s of training")
    assert val["accuracy"] > base["per_template"] + 0.25, (val, base)
    assert val["accuracy"] > base["majority"] + 0.4, (val, base)
    # colour and shape questions: chance 1/6 and 1/4
    assert val["accuracy_other"] > 0.6, val
    assert summary["final_loss"] < 0.5 * summary["first_loss"]


def test_initialised_from_the_pretraining_run(vqa_run, pretrained_default):
    _, stdout = vqa_run
    assert f"initialised from {pretrained_default}" in stdout
    assert "head.dense.weight <- mlm_head.dense.weight" in stdout
    assert "dropped" in stdout and "mlm_head" in stdout and "roi_head" in stdout
