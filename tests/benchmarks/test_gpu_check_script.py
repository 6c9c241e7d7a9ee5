"""benchmarks/gpu_check.sh, the one command for the GPU machine, checked without a GPU: its arguments, its plan in
--dry-run (every step, in order, each with a cap, the caps within the 9-minute budget) and that a dry run runs and
writes nothing."""

import os
import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
STEPS = ["install", "gpu-tests", "kernels", "step", "peers", "report"]


def run(*args, out=None, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("OUT", "WHEELS")}
    if out is not None:
        environ["OUT"] = str(out)
    environ.update(env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environ, timeout=60)


def plan(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"\] (\S+) \(cap (\d+)s\): ", stdout)}


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_prints_every_step_in_order_within_nine_minutes_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    result = run("--dry-run", out=out)
    assert result.returncode == 0, result.stderr
    caps = plan(result.stdout)
    assert list(caps) == STEPS
    assert sum(caps.values()) + 30 <= 540
    assert "pytest -q -m gpu" in result.stdout and "benchmarks.run peers --out" in result.stdout
    assert "--time-budget-s 80" in result.stdout  # a suite stops starting points before its cap
    assert not out.exists()


def test_a_smaller_budget_scales_the_caps_and_skips_what_no_longer_fits(tmp_path):
    result = run("--dry-run", "--budget-s", "270", out=tmp_path)
    caps = plan(result.stdout)
    full = plan(run("--dry-run", out=tmp_path).stdout)
    assert all(caps[s] <= full[s] // 2 + 1 for s in caps)
    result = run("--dry-run", "--budget-s", "100", out=tmp_path)
    assert "report: skipped" in result.stdout and result.returncode == 1


def test_carried_wheels_are_found(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "omegaconf-2.3.0-py3-none-any.whl").write_bytes(b"")
    result = run("--dry-run", out=tmp_path / "o", WHEELS=str(wheels))
    assert "carried wheels: omegaconf-2.3.0-py3-none-any.whl" in result.stdout
    assert "no carried wheels" in run("--dry-run", out=tmp_path / "o", WHEELS=str(tmp_path / "none")).stdout


def test_bad_arguments_are_errors_that_say_what_was_expected(tmp_path):
    result = run("--dry-run")
    assert result.returncode == 2 and "set OUT" in result.stderr
    result = run("--budget-s", "lots", out=tmp_path)
    assert result.returncode == 2 and "--budget-s expects whole seconds, found 'lots'" in result.stderr
    result = run("--frobnicate", out=tmp_path)
    assert result.returncode == 2 and "unknown argument '--frobnicate'" in result.stderr
    assert "dry-run" in run("--help").stdout
