"""`vlbert-fast bench`: found from the checkout, a clear error from an install without benchmarks/, and arguments
that cannot work refused before anything runs."""

from pathlib import Path

from vlbert_fast.cli import main
from vlbert_fast.commands import bench

ROOT = Path(__file__).resolve().parents[2]


def test_the_command_finds_the_checkout_it_was_imported_from():
    assert bench.find_checkout() == ROOT


def test_an_install_without_benchmarks_gets_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site-packages" / "vlbert_fast" / "commands" / "bench.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLBERT_FAST_CHECKOUT", raising=False)
    assert bench.find_checkout() is None
    assert main(["bench", "--smoke"]) == 2
    assert "benchmarks/ was not found" in capsys.readouterr().err
    monkeypatch.setenv("VLBERT_FAST_CHECKOUT", str(ROOT))
    assert bench.find_checkout() == ROOT


def test_the_arguments_travel_to_the_runner_unchanged():
    """The command runs benchmarks/run.py in a process of its own; the arguments it hands over parse back the same."""
    from vlbert_fast.cli import build_parser

    line = ["bench", "step", "--device", "cpu", "--compare", "a.csv", "--compare", "b", "--smoke", "--repeats", "3"]
    args = build_parser().parse_args(line)
    again = build_parser().parse_args(["bench", *bench.to_argv(args)])
    assert {k: v for k, v in vars(again).items() if k != "module"} == {
        k: v for k, v in vars(args).items() if k != "module"
    }
    assert bench.to_argv(build_parser().parse_args(["bench"])) == ["all"]


def test_arguments_that_cannot_work_are_refused(capfd, tmp_path):
    assert main(["bench", "kernels", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU here" in capfd.readouterr().out
    assert main(["bench", "step", "--smoke", "--profile", "--out", str(tmp_path)]) == 2
    assert "--profile profiles the CPU step" in capfd.readouterr().out
    assert main(["bench", "step", "--smoke", "--fail-if-regression", "5", "--out", str(tmp_path)]) == 2
    assert "--fail-if-regression needs --compare" in capfd.readouterr().out
    assert main(["bench", "step", "--smoke", "--op", "roi_align", "--out", str(tmp_path)]) == 2
    assert "ops are kernels" in capfd.readouterr().out
    assert main(["bench", "report", "--compare", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2
    assert "no such file or folder" in capfd.readouterr().out
