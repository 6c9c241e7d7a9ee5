"""Path specs as the original VL-BERT's Conceptual Captions files write them: a plain path, or a member of a zip
archive written `archive.zip@/member/path` (split at the first ".zip@"; slashes around the member are dropped).
Both are relative to a root directory (the dataset directory), unless absolute.

Archives stay open: each process keeps its own cache of ZipFile handles, keyed by its pid. A forked DataLoader
worker inherits its parent's handles, whose file offset is shared with the parent (one open file description), so
reading through them from two processes would interleave seeks; a new pid therefore starts with an empty cache and
opens archives lazily on first use.
"""

from __future__ import annotations

import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError

ZIP_MARK = ".zip@"


@dataclass(frozen=True)
class ResolvedPath:
    """Where a spec points: `file` on disk, and `member` inside it when `file` is a zip archive."""

    spec: str
    file: Path
    member: str | None = None

    @property
    def in_archive(self) -> bool:
        return self.member is not None


def fsync_path(path: Path) -> None:
    """Flushes a file's (or a directory's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    """Replaces `path` by `text` durably: a temporary file beside it (named per process), fsynced, renamed over it,
    and the rename fsynced. A reader, or a kill at any point, sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def under(root: Path, name: str) -> Path:
    """`name` as given when absolute, else inside `root` (the data root a config's relative names are read from)."""
    path = Path(name)
    return path if path.is_absolute() else root / path


def resolve_path(spec: str, root: str | os.PathLike) -> ResolvedPath:
    """Parses a spec (no disk access): `a/b.jpg` -> file root/a/b.jpg; `x.zip@/a/b.json` -> member a/b.json of
    root/x.zip."""
    if not isinstance(spec, str) or not spec:
        raise FormatError(None, None, None, "a non-empty path spec string", repr(spec), reason="bad path spec")
    at = spec.lower().find(ZIP_MARK)
    if at < 0:
        return ResolvedPath(spec, Path(root) / spec)
    archive = spec[: at + len(ZIP_MARK) - 1]
    member = spec[at + len(ZIP_MARK) :].strip("/")
    if not member:
        raise FormatError(
            spec, message=f"names the archive {archive!r} but no member after '@' (root {root})", reason="bad path spec"
        )
    return ResolvedPath(spec, Path(root) / archive, member)


class _ArchiveCache:
    """The open ZipFiles of one process (see the module docstring for why per process)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.archives: dict[Path, zipfile.ZipFile] = {}


_cache = _ArchiveCache()


def _archives() -> _ArchiveCache:
    global _cache
    if _cache.pid != os.getpid():
        # The parent's handles are dropped, not closed: closing them here could not hurt the parent, but they are
        # of no use to this process either. A fresh lock, too: the parent's may have been held at fork time.
        _cache = _ArchiveCache()
    return _cache


def open_archive(path: Path, spec: str, root: str | os.PathLike) -> zipfile.ZipFile:
    cache = _archives()
    with cache.lock:
        archive = cache.archives.get(path)
        if archive is None:
            try:
                archive = zipfile.ZipFile(path, "r")
            except FileNotFoundError:
                raise FormatError(
                    spec, message=f"archive {str(path)!r} does not exist (root {root})", reason="missing archive"
                ) from None
            except (zipfile.BadZipFile, OSError) as exc:
                raise FormatError(
                    spec,
                    message=f"{str(path)!r} is not a readable zip archive ({exc}) (root {root})",
                    reason="not a zip",
                ) from None
            cache.archives[path] = archive
    return archive


def read_bytes(spec: str, root: str | os.PathLike) -> bytes:
    """The bytes a spec points to (a file, or a stored or deflated zip member). Missing file, missing member, or a
    file that is not a zip: FormatError naming the spec and the root."""
    where = resolve_path(spec, root)
    if not where.in_archive:
        try:
            return where.file.read_bytes()
        except FileNotFoundError:
            raise FormatError(
                spec, message=f"file {str(where.file)!r} does not exist (root {root})", reason="missing file"
            ) from None
        except OSError as exc:
            raise FormatError(
                spec, message=f"cannot read {str(where.file)!r}: {exc} (root {root})", reason="unreadable file"
            ) from None
    archive = open_archive(where.file, spec, root)
    try:
        return archive.read(where.member)
    except KeyError:
        raise FormatError(
            spec,
            message=f"no member {where.member!r} in archive {str(where.file)!r} (root {root})",
            reason="missing member",
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:  # bad CRC, truncated archive
        raise FormatError(
            spec, message=f"cannot read member {where.member!r} of {str(where.file)!r}: {exc}", reason="bad member"
        ) from None


def path_exists(spec: str, root: str | os.PathLike) -> bool:
    """Whether the file, or the archive and its member, exist (opens the archive: cached like read_bytes)."""
    where = resolve_path(spec, root)
    if not where.in_archive:
        return where.file.is_file()
    if not where.file.is_file():
        return False
    try:
        archive = open_archive(where.file, spec, root)
    except FormatError:
        return False
    try:
        archive.getinfo(where.member)
    except KeyError:
        return False
    return True


def list_members(archive: str | os.PathLike, suffix: str = "") -> list[str]:
    """Names of the files in a zip archive that end with `suffix`, sorted (directories left out)."""
    path = Path(archive)
    zf = open_archive(path, os.fspath(path), path.parent)
    return sorted(n for n in zf.namelist() if not n.endswith("/") and n.endswith(suffix))


def close_archives() -> None:
    """Closes this process's open archives (e.g. before the files are rewritten)."""
    cache = _archives()
    with cache.lock:
        for archive in cache.archives.values():
            archive.close()
        cache.archives.clear()
