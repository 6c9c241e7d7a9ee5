"""benchmarks/gpu_check.sh, the one command for the GPU machine, checked without a GPU: its arguments, its plan in
--dry-run (every step, in order, each with a cap, the caps within the 9-minute budget) and that a dry run runs and
writes nothing."""

import os
import re
import subprocess
import sys
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
    total = re.search(r"plan: caps (\d+)s \+ 30s for packing = (\d+)s of the 540s budget", result.stdout)
    assert total and int(total[1]) == sum(caps.values()) and int(total[2]) <= 540
    assert "VLBERT_FAST_AUTOTUNE=first python3 -m pytest -q -m gpu" in result.stdout  # one config per kernel
    assert "benchmarks.run peers --out" in result.stdout
    assert "--time-budget-s 80" in result.stdout  # a suite stops starting points before its cap
    assert "setup.py build_ext --inplace" in result.stdout and "pip install -e" not in result.stdout
    assert not out.exists()


def test_the_package_and_its_kernels_import_from_the_checkout_without_an_install(tmp_path):
    """What gpu_check.sh relies on when its build fails or times out: PYTHONPATH=<checkout> is enough for every
    step (no package_dir mapping to lose), with the editable install's finder taken away."""
    root = SCRIPT.parents[1]
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower() "
        "and 'editable' not in getattr(f, '__name__', '').lower()]; "
        "import vlbert_fast.kernels.attention as k, vlbert_fast.ops as ops; print(k.__file__); "
        "print(sorted(n for n in dir(__import__('torch').ops.vlbert_fast) if not n.startswith('_'))[:2])"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "VLBERT_FAST_NO_JIT": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(root / "vlbert_fast" / "kernels" / "attention.py")


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
