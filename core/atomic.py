"""Crash-safe file writes: write a temporary file, fsync it, then rename it over the target."""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import SLMError


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def disk_error(e: OSError, what: str) -> SLMError:
    """The one-line error for a failed write; every caller leaves the previous version in place."""
    if e.errno == errno.ENOSPC:
        return SLMError(f"disk full while writing {what}: free some space; the previous version is intact")
    if e.errno == errno.EDQUOT:
        return SLMError(f"disk quota exceeded while writing {what}: free some space; the previous version is intact")
    if e.errno == errno.EFBIG:
        return SLMError(
            f"file too large while writing {what}: it is over this process's file-size limit (ulimit -f) or what the "
            "file system allows; the previous version is intact"
        )
    return SLMError(f"could not write {what}: {e.strerror or e}")


def file_mode() -> int:
    """The permissions a plain `open` gives a new file: 0o666 less the umask (0o644 under the usual 022)."""
    try:  # Linux says it without changing it
        status = Path("/proc/self/status").read_text(encoding="ascii")
        mask = int(status.split("Umask:", 1)[1].split()[0], 8)
    except (OSError, IndexError, ValueError):
        mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
        os.umask(mask)
    return 0o666 & ~mask


def _temp_file(path: Path) -> Path:
    """A new empty file beside `path` with the permissions a plain open would give (the umask's: 0644 under the
    usual 022), unlike `tempfile.mkstemp`'s 0600."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _with_errno(e: OSError, tmp: Path) -> OSError:
    """numpy reports a short write without its cause ("3072 requested and 2072 written"): one more byte finds it."""
    if e.errno is not None:
        return e
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return e
    try:
        os.write(fd, b"\0")
    except OSError as probe:
        return probe
    finally:
        os.close(fd)
    return e


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` then atomically move the finished, fsynced file to `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_file(path)
    except OSError as e:
        raise disk_error(e, str(path)) from None
    try:
        writer(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        e = _with_errno(e, tmp)
        tmp.unlink(missing_ok=True)
        raise disk_error(e, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes(path: Path, data: bytes) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def replace_dir(build: Callable[[Path], None], target: Path) -> None:
    """Build a directory with `build(tmp_dir)` and swap it in for `target`.

    The old directory is renamed aside before the new one takes its place, so at every moment
    either `target` or `target.old` holds a complete copy; `recover_dir` restores the latter.
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    recover_dir(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()  # folders and the files `build` opens get the umask's permissions
        build(tmp)
        for child in tmp.iterdir():
            with open(child, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(e, str(target)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        os.rename(target, old)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: Path) -> None:
    """Undo an interrupted `replace_dir`: bring back `target` from its aside copy if needed."""
    target = Path(target)
    if not target.name:  # "", "." or "/": nothing to recover
        return
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, target)
