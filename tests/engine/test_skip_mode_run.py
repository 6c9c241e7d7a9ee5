"""`data.on_bad_record=skip` end to end: a pretraining run over captions most of whose regions are missing and a text
corpus with a line that is not UTF-8 trains to the end. Micro batches that lose every image-text row train on their
text-only rows; each epoch reports the distinct records it skipped, and the summary counts each record once."""

import json
import re
import shutil

from ..shared import output_tail, run_cli

TINY = [
    "model.hidden_size=16",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.intermediate_size=32",
]


def test_skip_mode_trains_through_bad_records_and_counts_each_once(tmp_path):
    from vlbert_fast.config import SynthConfig
    from vlbert_fast.data.synth import generate

    root = generate(SynthConfig(train_images=8, val_images=4, corpus_lines=10, max_objects=2, seed=5), tmp_path / "w")
    captions = root / "cc_train.jsonl"
    records = [json.loads(line) for line in captions.read_text().splitlines()]
    bad = list(range(2, 8))  # 6 of the 8 records: regions missing from the archive
    for i in bad:
        records[i]["frcnn"] = f"frcnn.zip@/missing_{i}.json"
    captions.write_text("".join(json.dumps(r) + "\n" for r in records))
    corpus = root / "corpus.txt"
    corpus.write_bytes(corpus.read_bytes() + b"caf\xe9 au lait\n")
    shutil.rmtree(root / "features")  # regions from each record's frcnn JSON
    run_dir = tmp_path / "run"
    args = [
        "pretrain",
        f"data.root={root}",
        "data.features=",
        "data.on_bad_record=skip",
        f"run_dir={run_dir}",
        "train.max_steps=8",  # 2 epochs of 4 micro batches (2 captions + 2 text rows each)
        "train.global_batch_size=4",
        "train.micro_batch_size=4",
        "train.eval_batches=0",
        "train.log_every=1",
        *TINY,
    ]
    result = run_cli(args, tmp_path / "cache", timeout=900)
    assert result.returncode == 0, output_tail(result)
    out = result.stdout
    assert f"reading the data: skipped 1 malformed record:\n         1  {corpus}: invalid UTF-8" in out
    for epoch in (0, 1):  # every bad record once per epoch, whichever batch met it
        assert f"epoch {epoch}: skipped 6 malformed records:\n         6  {captions}: missing member" in out, out
    assert "skipped records: 7" in out  # 6 caption records + 1 corpus line, each counted once over 2 epochs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["skipped_records"] == 7
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    text_only_steps = [r["step"] for r in rows if "loss/mlm_image" not in r and "loss/roi" not in r]
    assert text_only_steps, "no micro batch lost all its image-text rows: the case this test is for did not happen"
    assert all(r["loss"] is not None and r["loss"] > 0 for r in rows)
    assert re.search(r"trained 8 steps \(2 epochs\)", out)
