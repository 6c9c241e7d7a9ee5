"""`vlbert-fast bench step --device cpu`: the command reaches the CPU step benchmark with its options, and the
benchmark (on its smoke model) writes rows of the documented schema for every provider and dropout, the speedups
from the same rounds, the markdown table beside the CSV, and in --profile mode the op tables instead. It checks the
script, not the speed."""

import pytest
import torch

from benchmarks import bench_cpu_step, harness

from .runner import main


def test_the_command_runs_the_cpu_step_with_its_options(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(bench_cpu_step, "main", lambda argv: calls.append(argv) or 0)
    out = tmp_path / "out"
    assert main(["bench", "step", "--device", "cpu", "--profile", "--repeats", "3", "--out", str(out)]) == 0
    (argv,) = calls  # only the CPU step: the GPU step and end-to-end scripts are not run
    assert argv[argv.index("--repeats") + 1] == "3" and argv[argv.index("--threads") + 1] == "2"
    assert "--profile" in argv and "--smoke" not in argv and argv[argv.index("--results-dir") + 1] == str(out)


def test_the_issue_sizes():
    cfg = bench_cpu_step.model_config(False, 0.1)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.vocab_size) == (768, 2, 12, 30522)
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.1
    batch = bench_cpu_step.make_batch(cfg, False)
    assert batch.num_samples == 8 and batch.seq_lens.tolist() == [32 + 36 + 1] * 8  # text, regions, [END]
    assert batch.num_regions == 8 * 36 and bool(batch.has_image.all())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu_step")
    assert bench_cpu_step.main(["--smoke", "--results-dir", str(out), "--threads", "1"]) == 0
    return out


def test_rows_for_every_provider_dropout_and_measure(smoke_run):
    rows = harness.read_rows(smoke_run / "cpu_step.csv")
    timed = {(r["op"], r["provider"], r["x_value"]) for r in rows if r["metric"] == "time"}
    assert timed == {
        (op, provider, dropout)
        for op in bench_cpu_step.OPS.values()
        for provider in bench_cpu_step.DEFAULT_PROVIDERS
        for dropout in ("0.0", "0.1")
    }
    for row in rows:
        assert row["unit"] == harness.METRICS[row["metric"]][0] and row["x_name"] == "dropout"
        assert float(row["p20"]) <= float(row["p50"]) <= float(row["p80"]), row
    speedups = {(r["op"], r["provider"]) for r in rows if r["metric"] == "speedup"}
    assert {provider for _, provider in speedups} == {"padded", "hf_eager"}  # ours over each peer, not over itself


def test_speedups_are_ratios_within_each_round(tmp_path):
    """Round by round: a peer twice as slow in a slow round and in a fast one is 2x, however much the rounds vary."""
    times = {"ours": {"fwd_bwd": [1.0, 3.0, 2.0], "step": [2.0, 4.0, 3.0]},
             "hf_eager": {"fwd_bwd": [2.0, 6.0, 4.0], "step": [3.0, 4.0, 6.0]}}  # fmt: skip
    cfg = bench_cpu_step.model_config(True, 0.0)
    batch = bench_cpu_step.make_batch(cfg, True)
    providers = [bench_cpu_step.Provider(name, None, None, None, 0.0) for name in times]
    writer = harness.ResultWriter(tmp_path, "cpu_step", torch.device("cpu"))
    bench_cpu_step.write_rows(writer, times, providers, batch, 0.0, {})
    rows = {(r["op"], r["provider"], r["metric"]): r for r in harness.read_rows(writer.path)}
    fwd_bwd, step = bench_cpu_step.OPS["fwd_bwd"], bench_cpu_step.OPS["step"]
    assert [float(rows[(fwd_bwd, "hf_eager", "speedup")][q]) for q in ("p20", "p50", "p80")] == [2.0, 2.0, 2.0]
    assert float(rows[(step, "hf_eager", "speedup")]["p50"]) == 1.5  # ratios 1.5, 1.0, 2.0
    assert float(rows[(fwd_bwd, "ours", "time")]["p50"]) == 2000.0  # ms
    assert (step, "ours", "speedup") not in rows


def test_the_markdown_table(smoke_run):
    text = (smoke_run / "cpu_step.md").read_text()
    assert "| dropout | measure | provider | ms per step | ours' speedup |" in text
    for provider in bench_cpu_step.DEFAULT_PROVIDERS:
        assert f"| 0.1 | forward + backward | {provider} |" in text
    assert "threads: 1" in text and "load average" in text


def test_profile_prints_the_top_ops_and_times_nothing(tmp_path, capsys):
    out = tmp_path / "profile"
    assert bench_cpu_step.main(["--smoke", "--profile", "--providers", "ours", "--dropouts", "0.1", "--results-dir",
                                str(out), "--profile-rows", "5"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "== ours, dropout 0.1: one step (forward, backward, AdamW)" in printed
    assert "Self CPU" in printed and "aten::" in printed
    assert not (out / "cpu_step.csv").exists()
