"""Safe archive extraction for downloaded datasets.

:func:`safe_extract` unpacks .zip / .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz after checking
every member first: absolute names, ``..`` components, links (symbolic or hard: all refused, the
simplest rule that cannot be tricked, and no dataset release needs them) and device or FIFO
entries make it refuse the whole archive, naming the member, before anything is written; so do
more than :data:`MAX_EXTRACT_MEMBERS` members or more than :data:`MAX_EXTRACT_BYTES` of declared
content (zip bombs), and the bytes actually written are counted against the same caps. It
unpacks into a temporary sibling and renames it over ``dest``.
"""

from __future__ import annotations

import logging
import lzma
import os
import re
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from fakeproof.fetch import DownloadError
from fakeproof.io import atomic_path

log = logging.getLogger(__name__)

#: Caps on what one archive may expand to (zip bombs); real dataset archives are far below them
#: (Celeb-DF v2: about 6,500 files, 10 GB; one DFDC part: about 2,400 files, 10 GB).
MAX_EXTRACT_BYTES = 1 << 40  # 1 TiB
MAX_EXTRACT_MEMBERS = 1_000_000
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")



def archive_kind(path: Path) -> str:
    """``zip`` or ``tar`` from the file name (any case); DownloadError for anything else."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(ARCHIVE_SUFFIXES):
        return "tar"
    raise DownloadError(f"{path}: not a supported archive ({', '.join(ARCHIVE_SUFFIXES)})")


def _check_name(archive: Path, name: str) -> PurePosixPath:
    """The member's relative path; DownloadError if it is absolute or climbs out with ``..``."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in p.parts:
        raise DownloadError(f"{archive}: member {name!r} contains '..'; refusing to extract")
    parts = [q for q in p.parts if q not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _too_many(archive: Path, max_members: int) -> DownloadError:
    return DownloadError(f"{archive}: more than {max_members} members; refusing to extract (a zip "
                         "bomb? if the archive is genuine, raise "
                         "fakeproof.archives.MAX_EXTRACT_MEMBERS)")


def _too_big(archive: Path, size: int, max_bytes: int, what: str = "expands to") -> DownloadError:
    return DownloadError(f"{archive}: {what} {_human(size)}, over the cap of {_human(max_bytes)}; "
                         "refusing to extract (a zip bomb? if the archive is genuine, raise "
                         "fakeproof.archives.MAX_EXTRACT_BYTES)")


def _members(archive: Path, max_members: int = MAX_EXTRACT_MEMBERS,
             max_bytes: int = MAX_EXTRACT_BYTES) -> list[tuple[PurePosixPath, bool, object]]:
    """Checked members as (relative path, is_dir, handle); raises before anything is written."""
    out = []
    total = 0
    if archive_kind(archive) == "zip":
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DownloadError(f"{archive}: not a valid zip ({e})") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise _too_many(archive, max_members)
            for info in infos:
                rel = _check_name(archive, info.filename)
                ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when not made on Unix
                if ftype == stat.S_IFLNK:
                    raise DownloadError(f"{archive}: member {info.filename!r} is a symbolic link; "
                                        "refusing to extract (links are not allowed)")
                if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                    raise DownloadError(f"{archive}: member {info.filename!r} is not a regular "
                                        "file or folder; refusing to extract")
                out.append((rel, info.is_dir(), info))
                total += 0 if info.is_dir() else info.file_size
        if total > max_bytes:
            raise _too_big(archive, total, max_bytes)
        return out
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(f"{archive}: not a valid tar archive ({e})") from None
    with tf:
        members = iter(tf)  # lazily, so a member-count bomb stops at the cap
        while True:
            try:
                info = next(members)
            except StopIteration:
                break
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
                raise DownloadError(f"{archive}: damaged tar archive ({e}); delete it and run "
                                    "again") from None
            if len(out) >= max_members:
                raise _too_many(archive, max_members)
            rel = _check_name(archive, info.name)
            if info.issym() or info.islnk():
                raise DownloadError(f"{archive}: member {info.name!r} is a link to "
                                    f"{info.linkname!r}; refusing to extract (links are not allowed)")
            if not (info.isfile() or info.isdir()):
                raise DownloadError(f"{archive}: member {info.name!r} is a device, FIFO or other "
                                    "special file; refusing to extract")
            out.append((rel, info.isdir(), info))
            total += info.size if info.isfile() else 0
            if total > max_bytes:
                raise _too_big(archive, total, max_bytes, "expands to more than")
    return out


def _copy_capped(src, dst, limit: int, written: list[int], archive: Path, max_bytes: int) -> None:
    """Copy at most ``limit`` bytes (the member's declared size); count them in ``written[0]``."""
    left = limit
    while block := src.read(min(1 << 20, left + 1)):
        left -= len(block)
        written[0] += len(block)
        if left < 0:
            raise DownloadError(f"{archive}: a member holds more bytes than its header declares; "
                                "refusing to extract (a zip bomb?)")
        if written[0] > max_bytes:
            raise _too_big(archive, written[0], max_bytes, "wrote more than")
        dst.write(block)


def safe_extract(archive: Path, dest: Path, *, max_bytes: int = MAX_EXTRACT_BYTES,
                 max_members: int = MAX_EXTRACT_MEMBERS) -> list[Path]:
    """Extract ``archive`` into ``dest`` safely; return the extracted files (sorted, under ``dest``).

    Every member is checked before anything is written (see the module docstring), including the
    caps ``max_members`` and ``max_bytes`` (declared sizes); the bytes written are counted against
    ``max_bytes`` too, and no member may yield more than its header declares. Extraction goes to a
    temporary sibling that replaces ``dest`` only when complete, so a refused or broken archive
    leaves ``dest`` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DownloadError(f"{archive}: no such archive")
    t0 = time.perf_counter()
    members = _members(archive, max_members, max_bytes)
    files: list[PurePosixPath] = []
    written = [0]
    with atomic_path(dest, is_dir=True) as tmp:
        try:
            if archive_kind(archive) == "zip":
                with zipfile.ZipFile(archive) as zf:
                    for rel, is_dir, info in tqdm(members, desc=f"extract {archive.name}",
                                                  leave=False):
                        if _place(tmp, rel, is_dir, archive):
                            with zf.open(info) as src, open(tmp / rel, "wb") as dst:
                                _copy_capped(src, dst, info.file_size, written, archive, max_bytes)
                            files.append(rel)
            else:
                with tarfile.open(archive, "r:*") as tf:
                    for rel, is_dir, info in tqdm(members, desc=f"extract {archive.name}",
                                                  leave=False):
                        if _place(tmp, rel, is_dir, archive):
                            src = tf.extractfile(info)
                            if src is None:  # pragma: no cover - regular files always have data
                                raise DownloadError(f"{archive}: member {info.name!r} has no data")
                            with src, open(tmp / rel, "wb") as dst:
                                _copy_capped(src, dst, info.size, written, archive, max_bytes)
                            files.append(rel)
        except (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError) as e:
            raise DownloadError(f"{archive}: damaged archive ({e}); delete it and run "
                                "again") from None
    out = sorted(dest / f for f in dict.fromkeys(files))
    log.info("extract: %s -> %s (%d files, %.1fs)", archive, dest, len(out), time.perf_counter() - t0)
    return out


def _place(tmp: Path, rel: PurePosixPath, is_dir: bool, archive: Path) -> bool:
    """Create the folders for a member; True if it is a file to write."""
    target = tmp / rel
    if is_dir:
        target.mkdir(parents=True, exist_ok=True)
        return False
    if str(rel) == ".":
        raise DownloadError(f"{archive}: a file member has an empty name; refusing to extract")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        raise DownloadError(f"{archive}: member {rel.as_posix()!r} is both a file and a folder")
    return True
