"""DeepSpeed's shared-memory communication op on CPU machines: built once, visibly, and never waited on forever.

On its CPU accelerator DeepSpeed compiles a small C++ op (`deepspeed_shm_comm`, 25-60 s on 2 cores) the first time
a process group starts, through `torch.utils.cpp_extension.load`. No DeepSpeed setting avoids it: `TorchBackend`
builds it whenever the op is marked compatible at install time, which it is on Linux. Torch guards the build with a
lock file (`<build dir>/lock`, created with O_EXCL, holding no PID); a build killed half-way (SIGKILL, or the SIGTERM
of Slurm, preemption or a CI timeout) leaves that file behind, and every later process waits on it forever without a
word.

`ensure_shm_op` runs before DeepSpeed starts its process group:
- builds go through one `flock` per build directory, which the kernel releases when its holder dies, so every
  process of ours builds in turn and none waits on a dead one;
- holding it, a torch lock file with no live process working in the build directory (ninja and the compiler run
  there) was left by a killed build: it is removed, with a message naming it;
- a missing or stale module is built with a message first (the first run otherwise prints nothing for a minute).

Where extensions go: `TORCH_EXTENSIONS_DIR` when set; otherwise, inside a virtual environment, `<venv>/torch_extensions`
(an extension is built against that environment's torch; torch's default, `~/.cache/torch_extensions`, is shared by
every environment of one Python version, which then rebuild it in turn). `make install` builds the op there.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

OP_NAME = "deepspeed_shm_comm"


def default_extensions_dir() -> Path | None:
    """`<venv>/torch_extensions` inside a writable virtual environment, else None (torch's own default)."""
    if sys.prefix == sys.base_prefix:
        return None
    path = Path(sys.prefix) / "torch_extensions"
    return path if os.access(sys.prefix, os.W_OK) else None


def use_default_extensions_dir() -> None:
    """Sets TORCH_EXTENSIONS_DIR to the environment's own folder unless the user chose one (idempotent)."""
    if "TORCH_EXTENSIONS_DIR" not in os.environ:
        path = default_extensions_dir()
        if path is not None:
            os.environ["TORCH_EXTENSIONS_DIR"] = str(path)


def _build_directory(name: str) -> Path:
    # torch's rule (torch.utils.cpp_extension._get_build_directory): TORCH_EXTENSIONS_DIR/<name>, else the default
    # root with a py<version>_<accelerator> level
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(name, verbose=False))


def _processes_in(directory: Path) -> list[int]:
    """PIDs of live processes whose working directory is `directory` (a build's ninja and compilers)."""
    target = os.path.realpath(directory)
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/cwd") == target:
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def remove_stale_build_lock(build_dir: Path, log: Callable[[str], None]) -> bool:
    """Removes torch's `lock` in `build_dir` if no live process works there; call only while holding the build
    flock (so no process of ours is between taking torch's lock and starting ninja). Returns whether it removed one."""
    lock = build_dir / "lock"
    if not lock.exists():
        return False
    busy = _processes_in(build_dir)
    if busy:
        log(f"a build of {build_dir.name} is running in {build_dir} (pids {busy}); waiting for it")
        return False
    age = time.time() - lock.stat().st_mtime
    lock.unlink(missing_ok=True)
    log(
        f"removed a stale build lock left by an interrupted build ({age:.0f} s old, no process building): {lock}; "
        "building again"
    )
    return True


def ensure_shm_op(log: Callable[[str], None] = print, verbose: bool = False) -> Path | None:
    """Builds DeepSpeed's CPU shared-memory op if it is missing or stale, removing a dead build's lock first.
    Returns the build directory, or None where DeepSpeed would not build the op (GPU accelerator, not Linux,
    not marked compatible). Safe to call from every rank at once."""
    import torch

    use_default_extensions_dir()
    accelerator = os.environ.get("DS_ACCELERATOR") or ("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator != "cpu" or sys.platform != "linux":
        return None
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    build_dir = _build_directory(builder.NAME)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir.parent / f".{builder.NAME}.flock", "a") as guard:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process to finish building {builder.NAME} in {build_dir}")
            fcntl.flock(guard, fcntl.LOCK_EX)
        while (build_dir / "lock").exists() and not remove_stale_build_lock(build_dir, log):
            time.sleep(1.0)  # a foreign build (not through this function) is running: torch would wait the same
        if not any(build_dir.glob(f"{builder.NAME}*.so")):
            log(f"building DeepSpeed's shared-memory communication op into {build_dir} (once per environment, 25-60 s)")
        start = time.time()
        builder.load(verbose=verbose)  # torch's hash check: instant when the module is current, a rebuild when stale
        if time.time() - start > 5:
            log(f"built {builder.NAME} in {time.time() - start:.0f} s")
    return build_dir


if __name__ == "__main__":  # `make install`: build it once, with the compiler's progress shown
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if ensure_shm_op(verbose=True) is None:
        print("DeepSpeed builds no shared-memory op on this machine (GPU accelerator or not Linux); nothing to build")
