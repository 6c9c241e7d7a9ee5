"""Which benchmark modules each suite runs, and the protocol a module follows to plug in.

A bench module is `benchmarks/bench_<name>.py`, runnable on its own as `python -m benchmarks.bench_<name>`. It has:

- `main(argv: list[str] | None = None) -> int` (required): runs its sweep and appends its rows through the harness
  (`harness.ResultWriter`, `harness.run_workload`). It accepts at least the harness's shared arguments
  (`harness.parser`): `--smoke`, `--device`, `--results-dir`, `--rep-ms`, `--compile-backend`, `--peak-tflops`;
  the suite runner passes exactly these.
- `OPS: tuple[str, ...]` (optional): the ops it measures, which `--op NAME` selects by; default: the module's name
  without `bench_` (bench_roi_align -> roi_align).
- `check_cases(device, smoke, seed) -> list[kernel_loop.CheckCase]` (optional): fresh random inputs on which
  `--check` compares every backend of the op with its reference; without it, kernel_loop's own generator for the
  op is used where there is one.
- `BLOCK_CONFIGS: dict[str, list[tuple[str, dict]]]` (optional): op -> (label, {"module.ATTRIBUTE": value}) launch
  configurations that the kernel developer's loop (`--op NAME`) sweeps, each applied with `harness.patched`;
  without it, kernel_loop's own list for the op is used where there is one.

Providers that are ours are named `ours*`, `triton*` or `native*`; every other provider is a peer (torch,
torch_compile, torchvision, sdpa, flash_attn, reference, hf_*), and the report computes our speedup over each.

Adding a module to a suite is one line in `SUITES`. A module that is not there (a script still on another branch)
is skipped with one line saying why, and the run goes on.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

SUITES: dict[str, list[str]] = {
    "kernels": [
        "bench_embedding",
        "bench_geometry",
        "bench_roi_align",
        "bench_attention",
        "bench_encoder_layer",
    ],
    "step": ["bench_step", "bench_e2e_step"],
    "peers": ["bench_peers"],
    "data": ["bench_data", "bench_data_scale"],
}
SUITE_ORDER = ("kernels", "step", "peers")  # `all`: the GPU suites; `data` measures the loader on any machine
CPU_SUITES: dict[str, list[str]] = {"step": ["bench_cpu_step"], "data": SUITES["data"]}
"""What a suite runs at full size on a CPU (`--device cpu` without --smoke), its rows going to benchmarks/results
with each module's own summary beside them: the training step against HF VisualBERT at the sizes a CPU user meets
first, and the loader. The other suites' full sizes are for a GPU."""

WHY_MISSING: dict[str, str] = {}  # module -> the issue that brings it, for scripts still on another branch

OURS_PREFIXES = ("ours", "triton", "native")


def is_ours(provider: str) -> bool:
    return provider.startswith(OURS_PREFIXES)


@dataclass
class Entry:
    name: str
    module: ModuleType | None
    missing: str | None = None
    """Why the module could not be loaded; None when it was."""

    @property
    def ops(self) -> tuple[str, ...]:
        if self.module is not None and hasattr(self.module, "OPS"):
            return tuple(self.module.OPS)
        return (self.name.removeprefix("bench_"),)


def load(name: str) -> Entry:
    """The module `benchmarks.<name>`, or an entry saying why it is not there. Only the module itself being absent
    counts as missing: an import error inside a module that exists is a bug and is raised."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{name}":
            raise
        what = WHY_MISSING.get(name, "a benchmark script listed in benchmarks/registry.py")
        return Entry(name, None, f"benchmarks/{name}.py is not in this checkout yet ({what})")
    if not callable(getattr(module, "main", None)):
        return Entry(name, None, f"benchmarks/{name}.py has no main(argv) (see benchmarks/registry.py)")
    return Entry(name, module)


def suite_names(suite: str) -> list[str]:
    if suite == "all":
        return list(SUITE_ORDER)
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {[*SUITES, 'all']}, found {suite!r}")
    return [suite]


def entries(suite: str, cpu: bool = False) -> list[Entry]:
    """The modules of `suite`; with `cpu`, those it runs at full size on a CPU (`CPU_SUITES`)."""
    return [load(name) for name in (CPU_SUITES if cpu else SUITES)[suite]]


def modules_for_op(op: str) -> list[Entry]:
    """The loaded kernel modules that measure `op`."""
    return [e for e in entries("kernels") if e.module is not None and op in e.ops]


def known_ops() -> list[str]:
    return sorted({op for e in entries("kernels") if e.module is not None for op in e.ops})
