"""The compile peer (reference_compile: our reference model under torch.compile) is a peer: a compiler that fails, or
is still compiling after the limit, makes it unavailable with the reason in the output and in report.md's "Not
measured", and the run exits 0; a failure of ours still fails the run. CPU runs without --out write into a fresh
directory each time."""

import os
import subprocess
import sys
import time

import pytest
import torch

from benchmarks import bench_step, harness, registry

from .runner import main


@pytest.fixture
def peers_only(monkeypatch):
    """The peers suite cut to ours and the compile peer (the others have their own smoke test)."""
    monkeypatch.setattr(registry, "SUITES", {**registry.SUITES, "peers": ["bench_peers"]})
    monkeypatch.setitem(bench_step.DEFAULT_PROVIDERS, "peers", ("ours", "reference_compile"))


def backend_that(name: str, behaviour):
    """A torch.compile backend registered under `name` that calls `behaviour()` before compiling nothing (eager)."""

    def backend(graph_module, example_inputs):
        behaviour()
        return graph_module.forward

    torch._dynamo.register_backend(compiler_fn=backend, name=name)
    return name


def raise_codegen_error():
    raise RuntimeError("C++ compile error: invalid operands of types 'float' and 'float' to binary 'operator^'")


def test_a_compiler_that_fails_makes_the_peer_unavailable(peers_only, tmp_path, capsys):
    name = backend_that("broken_codegen_for_test", raise_codegen_error)
    out = tmp_path / "bench"
    assert main(["bench", "peers", "--smoke", "--compile-backend", name, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    reason = (
        "torch.compile (broken_codegen_for_test) failed on this machine: RuntimeError: C++ compile error: invalid "
        "operands of types 'float' and 'float' to binary 'operator^'"
    )
    assert f"precomputed_smoke reference_compile batch=3: skipped ({reason})" in printed
    report = (out / "report.md").read_text()
    assert "## Not measured" in report
    assert f"- peers reference_compile at precomputed_smoke batch=3: {reason}" in report
    providers = {r["provider"] for r in harness.read_rows(out / "peers.csv") if r["metric"] == "time"}
    assert providers == {"ours"}


def test_a_compile_past_the_limit_makes_the_peer_unavailable(peers_only, tmp_path, monkeypatch, capsys):
    compiles = {"started": 0, "finished": 0}

    def slow_compile():
        compiles["started"] += 1
        time.sleep(30)
        compiles["finished"] += 1

    name = backend_that("slow_compiler_for_test", slow_compile)
    monkeypatch.setitem(bench_step.COMPILE_LIMIT_S, "cpu", 1.0)
    assert main(["bench", "peers", "--smoke", "--compile-backend", name, "--out", str(tmp_path / "b")]) == 0
    # The limit cut the compile short (a count, not a wall-clock bound: the rest of the smoke run may be slow on a
    # loaded machine) and the peer was not compiled again afterwards.
    assert compiles == {"started": 1, "finished": 0}
    reason = "torch.compile (slow_compiler_for_test) was still compiling the first step after 1 s"
    assert f"reference_compile batch=3: skipped ({reason})" in capsys.readouterr().out
    assert reason in (tmp_path / "b" / "report.md").read_text()


def test_a_failure_of_ours_fails_the_run(peers_only, tmp_path, monkeypatch, capsys):
    real = bench_step.provider_step

    def broken_ours(provider, *args):
        if provider == "ours":
            raise ValueError("a bug of ours")
        return real(provider, *args)

    monkeypatch.setattr(bench_step, "provider_step", broken_ours)
    assert main(["bench", "peers", "--smoke", "--compile-backend", "eager", "--out", str(tmp_path / "c")]) == 1
    printed = capsys.readouterr().out
    assert "smoke ours batch=3: FAILED" in printed and "not measured: peers ours" not in printed
    assert "ValueError: a bug of ours" in printed


def test_only_the_compilers_errors_count_as_the_compilers():
    from torch._dynamo.exc import BackendCompilerFailed

    assert bench_step.compiler_failure(ValueError("ours")) is None
    try:
        try:
            raise bench_step.CompileTimeout("late")
        except bench_step.CompileTimeout as inner:
            raise BackendCompilerFailed(lambda *a: None, inner, None) from inner
    except BackendCompilerFailed as outer:
        assert isinstance(bench_step.compiler_failure(outer), bench_step.CompileTimeout)


def test_cpu_runs_without_out_get_a_fresh_directory():
    cpu = torch.device("cpu")
    first, second = harness.default_results_dir(None, cpu), harness.default_results_dir(None, cpu)
    assert first != second and not any(first.iterdir()) and first.name.startswith("vlbert_fast_bench_")
    first.rmdir()
    second.rmdir()


def test_the_command_line_starts_without_importing_triton():
    """`vlbert-fast bench` on a CPU sets TRITON_INTERPRET once it knows the device; Triton imported earlier (say by
    torch.compiler.disable at an op module's import, which loads Dynamo) makes every interpreted kernel fail ("Cannot
    call @triton.jit'd outside of the scope of a kernel")."""
    code = "import sys; from vlbert_fast.cli import build_parser; build_parser(); print('triton' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stdout + result.stderr[-2000:]
