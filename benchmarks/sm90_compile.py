"""Compile the project's Triton kernels for an H100 (sm_90) on a machine without a GPU, through their own launchers.

    with hopper_launches() as launches:
        attention_forward(q, k, v, ...)          # any host launcher, CPU tensors standing in for GPU ones
    for launch in launches: launch.kernel, launch.constexprs, launch.compiled ...

Inside the context Triton's active driver is replaced by one whose target is `GPUTarget("cuda", 90, 32)`, and a
kernel launch (`kernel[grid](...)`) compiles instead of running (`JITFunction.run(..., warmup=True)`); an autotuned
kernel compiles every config its autotuner would time (after its own pruning). CPU tensors stand in for the GPU's:
their dtype, strides and 16-byte alignment drive Triton's specialisation exactly as GPU tensors would. Launchers that
size a persistent grid by the SM count (`kernels.utils.persistent_programs`) see an H100's 132 SMs, and the launch
records how many programs per SM the launcher assumed. Triton's cache goes to a fresh directory, so every kernel
really compiles (ptxas's report is read from its log and compile time is measured).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import tempfile
import time
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.driver import ty_to_cpp
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, KernelInterface

from . import sass_metrics

SM90 = GPUTarget("cuda", 90, 32)


class HopperDriver:
    """The parts of Triton's driver interface that compiling needs, answering for an sm_90 GPU (TOOLCHAIN.md)."""

    def __init__(self, target: GPUTarget = SM90):
        self.target = target

    @staticmethod
    def is_active() -> bool:
        return True

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")

    def get_device_interface(self):
        return torch.cuda

    def map_python_to_cpp_type(self, ty: str) -> str:
        return ty_to_cpp(ty)


@dataclass
class Launch:
    """One compiled kernel variant, as the launcher would have launched it."""

    kernel: str  # the @triton.jit function's name
    constexprs: dict  # its constexpr arguments, the autotune config's included
    num_warps: int
    num_stages: int
    compiled: object  # triton's CompiledKernel (asm: ptx, cubin; metadata.shared)
    ptxas_log: str  # ptxas -v output of this compile ("" when it came from a cache)
    compile_s: float
    programs: int | None  # the grid's program count at the launch's shape
    programs_per_sm: int | None = None  # what a persistent launcher assumed (persistent_programs' per_sm)
    labels: dict = field(default_factory=dict)  # filled by the caller: variant, dtype, dropout, shape ...

    def registers_and_spills(self) -> tuple[int, int]:
        if self.ptxas_log and "Used" in self.ptxas_log:
            return sass_metrics.parse_ptxas_log(self.ptxas_log)
        return sass_metrics.ptxas_report(self.compiled.asm["ptx"])


def _constexprs(fn: JITFunction, args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(fn.arg_names, args, strict=False)) | kwargs
    return {p.name: bound[p.name] for p in fn.params if p.is_constexpr and p.name in bound}


def _programs(grid, meta: dict) -> int | None:
    grid = grid(meta) if callable(grid) else grid
    if grid is None:
        return None
    total = 1
    for n in grid:
        total *= int(n)
    return total


class _Recorder:
    def __init__(self):
        self.launches: list[Launch] = []
        self.pending_per_sm: int | None = None

    def compile(self, fn: JITFunction, grid, args: tuple, kwargs: dict) -> None:
        log = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(log):
            compiled = fn.run(*args, grid=grid, warmup=True, **kwargs)
        seconds = time.perf_counter() - start
        meta = dict(zip(fn.arg_names, args, strict=False)) | kwargs
        self.launches.append(
            Launch(
                kernel=fn.__name__, constexprs=_constexprs(fn, args, kwargs),
                num_warps=compiled.metadata.num_warps, num_stages=compiled.metadata.num_stages, compiled=compiled,
                ptxas_log=log.getvalue(), compile_s=seconds, programs=_programs(grid, meta),
                programs_per_sm=self.pending_per_sm,
            )
        )  # fmt: skip

    def launcher(self, kernel: KernelInterface, grid):
        def launch(*args, **kwargs):
            if isinstance(kernel, Autotuner):
                kernel.nargs = dict(zip(kernel.arg_names, args, strict=False))
                try:
                    for config in kernel.prune_configs(kwargs):
                        self.compile(kernel.fn, grid, args, {**kwargs, **config.all_kwargs()})
                finally:
                    kernel.nargs = None
            elif isinstance(kernel, JITFunction):
                self.compile(kernel, grid, args, kwargs)
            else:
                raise TypeError(f"cannot compile a {type(kernel).__name__} launch for sm_90 statically")
            self.pending_per_sm = None

        return launch

    def persistent_programs(self, original):
        def programs(rows: int, device: torch.device, per_sm: int, columns: int = 1) -> int:
            self.pending_per_sm = per_sm
            return max(1, min(rows, per_sm * sass_metrics.SM90_SMS // max(columns, 1))) if rows > 0 else 0

        programs.original = original
        return programs


def _kernel_modules():
    import vlbert_fast.kernels as package

    for info in pkgutil.iter_modules(package.__path__):
        yield importlib.import_module(f"{package.__name__}.{info.name}")


@contextlib.contextmanager
def hopper_launches(target: GPUTarget = SM90):
    """Compile, do not launch, every Triton kernel launch in the block for `target`; yields the list of Launches."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("TRITON_INTERPRET=1: the kernels were decorated for the interpreter; compile in a process "
                           "started with TRITON_INTERPRET=0")  # fmt: skip
    recorder = _Recorder()
    runtime_driver = triton.runtime.driver
    saved_active = runtime_driver._active
    saved_getitem = KernelInterface.__getitem__
    patched = []
    for module in _kernel_modules():
        if hasattr(module, "persistent_programs"):
            patched.append((module, module.persistent_programs))
            module.persistent_programs = recorder.persistent_programs(module.persistent_programs)
    saved_env = {name: os.environ.get(name) for name in ("TRITON_CACHE_DIR", "TRITON_DUMP_PTXAS_LOG")}
    with tempfile.TemporaryDirectory(prefix="sm90_static_") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
        runtime_driver.set_active(HopperDriver(target))
        KernelInterface.__getitem__ = lambda kernel, grid: recorder.launcher(kernel, grid)
        try:
            yield recorder.launches
        finally:
            KernelInterface.__getitem__ = saved_getitem
            runtime_driver._active = saved_active
            for module, original in patched:
                module.persistent_programs = original
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
