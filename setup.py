"""Build and install vlbert_fast.

`kernels/` (Triton) installs as the subpackage `vlbert_fast.kernels` through `package_dir`, which also works for
editable installs. Install with `pip install -e . --no-build-isolation -c constraints.txt` so the build sees the
installed torch (the C++/CUDA extension in csrc/ is built against it).
"""

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


packages = find_packages(include=["vlbert_fast", "vlbert_fast.*"]) + ["vlbert_fast.kernels"]

setup(
    name="vlbert_fast",
    version=read_version(),
    description="Fast VL-BERT pretraining and fine-tuning: Triton/CUDA kernels, packed attention, DeepSpeed ZeRO",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"vlbert_fast.kernels": "kernels"},
    install_requires=read_requirements(),
    extras_require={
        # flash-attn has no CPU wheel; it is an optional attention backend on CUDA machines.
        "flash-attn": ["flash-attn>=2.5"],
        "dev": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.5", "pybind11>=2.12", "ninja>=1.11"],
    },
    entry_points={"console_scripts": ["vlbert-fast=vlbert_fast.cli:main"]},
    zip_safe=False,
)
