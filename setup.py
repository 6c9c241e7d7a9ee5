"""Build and install vlbert_fast.

The Triton kernels are the subpackage `vlbert_fast.kernels` (vlbert_fast/kernels/), an ordinary package that imports
from a source checkout without an install step. (They were a top-level `kernels/` folder mapped by `package_dir`;
that name shadowed Hugging Face's `kernels` package, a dependency of transformers >= 5.x whose setuptools hook then
broke every build run from the repository root.) Install with `pip install -e . --no-build-isolation
-c constraints.txt` so the build sees the installed torch (the C++/CUDA extension in csrc/ is built against it).

The extension `vlbert_fast._C` (csrc/) is built with ninja: its C++ part everywhere, its CUDA part (the .cu files)
where torch has CUDA and the CUDA toolkit is found (`VLBERT_FAST_CUDA=0` turns that off, `=1` forces it). Without
torch at build time no extension is built; vlbert_fast/_ext.py then JIT-builds the C++ part on first use.
With CUDA, TORCH_CUDA_ARCH_LIST (e.g. "9.0") limits the architectures compiled (default: the visible GPUs', else
every architecture this torch supports, which is slow).
"""

import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version() -> str:
    for line in (ROOT / "vlbert_fast" / "version.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=")[1].strip().strip('"')
    raise RuntimeError("vlbert_fast/version.py has no __version__ line")


def read_requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def extension_modules() -> tuple[list, dict]:
    """(ext_modules, cmdclass) for vlbert_fast._C; empty when torch is not importable at build time."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as exc:
        print(f"vlbert_fast: not building vlbert_fast._C ({exc}); it will be JIT-built on first use", file=sys.stderr)
        return [], {}
    # Relative paths: setuptools rejects absolute source paths in editable builds.
    sources = ["csrc/vlbert_fast_api.cpp", "csrc/roi_align_cpu.cpp", "csrc/philox_cpu.cpp"]
    cuda_sources = ["csrc/roi_align_cuda.cu"]
    switch = os.environ.get("VLBERT_FAST_CUDA", "")
    with_cuda = switch == "1" or (switch != "0" and torch.version.cuda is not None and CUDA_HOME is not None)
    cxx = ["-O3"]  # the C++ standard is torch's choice (C++20 for torch 2.13, C++17 before)
    if with_cuda:
        ext = CUDAExtension(
            "vlbert_fast._C",
            sources + cuda_sources,
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
        )
    else:
        ext = CppExtension("vlbert_fast._C", sources, extra_compile_args={"cxx": cxx})
    print(f"vlbert_fast: building vlbert_fast._C ({'C++ + CUDA' if with_cuda else 'C++ only'})", file=sys.stderr)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_modules()
packages = find_packages(include=["vlbert_fast", "vlbert_fast.*"])

setup(
    name="vlbert_fast",
    version=read_version(),
    description="Fast VL-BERT pretraining and fine-tuning: Triton/CUDA kernels, packed attention, DeepSpeed ZeRO",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    install_requires=read_requirements(),
    extras_require={
        # flash-attn has no CPU wheel; it is an optional attention backend on CUDA machines.
        "flash-attn": ["flash-attn>=2.5"],
        "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.5", "pybind11>=2.12", "ninja>=1.11"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["vlbert-fast=vlbert_fast.cli:main"]},
    zip_safe=False,
)
