"""Getting a dataset onto disk: resumable HTTP(S) downloads, safe archive extraction, and the
FaceForensics++ official download script.

- :func:`fetch` downloads to ``<dest>.part``, resumes it with an HTTP ``Range`` request, restarts
  when a server ignores ``Range``, checks a sha256 and renames the file into place when complete.
- :func:`safe_extract` unpacks .zip / .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz after checking
  every member first: absolute names, ``..`` components, links (symbolic or hard: all refused, the
  simplest rule that cannot be tricked, and no dataset release needs them) and device or FIFO
  entries make it refuse the whole archive, naming the member, before anything is written; so do
  more than :data:`MAX_EXTRACT_MEMBERS` members or more than :data:`MAX_EXTRACT_BYTES` of declared
  content (zip bombs), and the bytes actually written are counted against the same caps. It
  unpacks into a temporary sibling and renames it over ``dest``.
- :func:`run_ffpp_downloader` runs the FF++ script users receive after the authors' form.
- :func:`prepare_raw` is what the download stage calls before building the video table.

Downloads live in :func:`cache_root` (``.fakeproof-cache/`` at the project root, git- and
dvc-ignored), not in ``data/raw``: DVC deletes a stage's outs before running it and the stage
writes ``data/raw`` through a temporary folder that is removed on error, so a partial file kept
there could never be resumed. A killed or cut download leaves ``<name>.part`` in the cache and the
next run resumes it; a finished, checked archive stays there, so ``dvc repro -f download``
extracts it again without downloading it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import lzma
import os
import re
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from fakeproof.config import DataParams
from fakeproof.io import atomic_path
from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

CACHE_ENV = "FAKEPROOF_CACHE"
DEFAULT_CACHE = ".fakeproof-cache"
#: Caps on what one archive may expand to (zip bombs); real dataset archives are far below them
#: (Celeb-DF v2: about 6,500 files, 10 GB; one DFDC part: about 2,400 files, 10 GB).
MAX_EXTRACT_BYTES = 1 << 40  # 1 TiB
MAX_EXTRACT_MEMBERS = 1_000_000
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
FFPP_DATASETS_ACTORS = ("DeepFakeDetection_original", "DeepFakeDetection")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(FakeproofError, RuntimeError):
    """A download, checksum, archive or downloader run failed (message: one line)."""


def cache_root() -> Path:
    """The folder that keeps downloads and video fingerprints between runs.

    ``$FAKEPROOF_CACHE`` when set, else ``.fakeproof-cache`` relative to the current directory
    (the project root, where DVC runs every stage). It is no DVC out, so DVC never deletes it.
    """
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


# --------------------------------------------------------------------------------------------------
# HTTP download with resume
# --------------------------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open(url: str, offset: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "fakeproof", "Accept-Encoding": "identity"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(req, timeout=timeout)


def fetch(url: str, dest: Path, sha256: str | None = None, *, chunk: int = 1 << 20,
          timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (resumable) and return ``dest``.

    Bytes go to ``dest.part`` first; an existing ``.part`` is resumed with ``Range: bytes=N-``. A
    server that answers 200 instead of 206 sends the whole file, so the part is restarted. With
    ``sha256`` the finished file is verified (a mismatch deletes it and raises); an existing
    ``dest`` with the right checksum (or any existing ``dest`` when no checksum is given) is kept
    without a request. Raises :class:`DownloadError` with a one-line message.
    """
    dest = Path(dest)
    want = sha256.lower().strip() if sha256 else None
    if dest.is_file():
        if want is None or sha256_file(dest) == want:
            log.info("download: %s already present; skipped", dest)
            return dest
        log.warning("download: %s has the wrong sha256; downloading it again", dest)
        dest.unlink()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{dest.parent}: cannot create the download folder ({e.strerror}); "
                            f"set ${CACHE_ENV} to a writable folder") from None
    part = dest.with_suffix(dest.suffix + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    t0 = time.perf_counter()
    try:
        resp = _open(url, offset, timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The part may already hold the whole file; verify it below, else restart once.
            total = _content_range_total(e.headers.get("Content-Range", ""))
            if total is not None and total == offset:
                return _finish(part, dest, want, url, offset, t0)
            part.unlink()
            return fetch(url, dest, sha256, chunk=chunk, timeout=timeout)
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check data.url") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot connect ({e.reason}); check data.url and the network") from None
    except ValueError as e:
        raise DownloadError(f"{url}: not a valid URL ({e}); check data.url") from None
    with resp:
        status = resp.getcode() or 200  # file:// URLs have no status
        mode = "wb"
        if offset and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                raise DownloadError(f"{url}: server resumed at byte {start}, asked for {offset}; "
                                    f"delete {part} and run again")
            mode = "ab"
        elif offset:
            log.info("download: %s ignored the Range request (HTTP %d); restarting", url, status)
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with open(part, mode) as fh, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=dest.name, leave=False) as bar:
            try:
                while block := resp.read(chunk):
                    fh.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"{url}: connection lost after {fh.tell()} bytes ({e}); "
                                    "run again to resume") from None
        size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{url}: incomplete ({size} of {total} bytes); run again to resume")
    return _finish(part, dest, want, url, size - offset, t0)


def _finish(part: Path, dest: Path, want: str | None, url: str, fetched: int, t0: float) -> Path:
    if want is not None:
        got = sha256_file(part)
        if got != want:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {got} does not match data.sha256 {want}; the file "
                                "was deleted: check data.url and data.sha256")
    os.replace(part, dest)
    dt = time.perf_counter() - t0
    log.info("download: %s -> %s (%d bytes fetched, %d in all, %.1fs%s)", url, dest, fetched,
             dest.stat().st_size, dt, ", sha256 ok" if want else "")
    return dest


def _content_range_start(value: str) -> int | None:
    m = _CONTENT_RANGE.match(value.strip())
    return int(m.group(1)) if m else None


def _content_range_total(value: str) -> int | None:
    m = re.match(r"bytes\s+\*/(\d+)", value.strip())
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------------


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
                         "fakeproof.download.MAX_EXTRACT_MEMBERS)")


def _too_big(archive: Path, size: int, max_bytes: int, what: str = "expands to") -> DownloadError:
    return DownloadError(f"{archive}: {what} {_human(size)}, over the cap of {_human(max_bytes)}; "
                         "refusing to extract (a zip bomb? if the archive is genuine, raise "
                         "fakeproof.download.MAX_EXTRACT_BYTES)")


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


# --------------------------------------------------------------------------------------------------
# FaceForensics++ downloader and the download stage's entry point
# --------------------------------------------------------------------------------------------------


def ffpp_datasets(params: DataParams) -> list[str]:
    """The ``-d`` values to pass to the FF++ script for ``data.ffpp``, in a fixed order."""
    ds = ["original"] + [m for m in params.ffpp.methods if m != "DeepFakeDetection"]
    if params.ffpp.include_actors or "DeepFakeDetection" in params.ffpp.methods:
        ds += list(FFPP_DATASETS_ACTORS)
    return list(dict.fromkeys(ds))


def run_ffpp_downloader(script: Path, out_dir: Path, params: DataParams) -> None:
    """Run the official FF++ download script into ``out_dir`` for each needed dataset.

    Calls ``python <script> <out_dir> -d <dataset> -c <compression> -t videos`` (plus
    ``--server <s>`` when ``data.ffpp.server`` is set) once per dataset of :func:`ffpp_datasets`.
    The script asks the user to press a key to accept the FaceForensics terms of use (``input()``).
    That answer is the user's: only with ``data.ffpp.accept_terms: true`` (their statement that
    they accepted the terms on the authors' form) is a newline fed on stdin; otherwise the script
    reads the keypress from the terminal, and without a terminal the run stops with one line
    before starting. The script skips files it already has, so a rerun resumes. Its output goes
    to the terminal.
    """
    script, out_dir = Path(script), Path(out_dir)
    if not script.is_file():
        raise DownloadError(f"data.ffpp_downloader = {str(script)!r}: no such file; give the path of "
                            "the download script the FaceForensics++ authors sent you")
    accept = bool(getattr(params.ffpp, "accept_terms", False))
    if not accept and not _terminal():
        raise DownloadError("the FF++ download script asks you to accept the FaceForensics terms "
                            "of use, and there is no terminal to answer it: run the download stage "
                            "in a terminal, or set data.ffpp.accept_terms: true if you accepted the "
                            "terms on the authors' form")
    out_dir.mkdir(parents=True, exist_ok=True)
    c = params.ffpp.compression
    server = getattr(params.ffpp, "server", None)
    for ds in ffpp_datasets(params):
        cmd = [sys.executable, str(script), str(out_dir), "-d", ds, "-c", c, "-t", "videos"]
        if server:
            cmd += ["--server", str(server)]
        t0 = time.perf_counter()
        log.info("download: running the FF++ downloader for %s (%s)%s", ds, c,
                 "; data.ffpp.accept_terms: true answers its terms-of-use prompt" if accept else
                 "; answer its terms-of-use prompt")
        if accept:
            proc = subprocess.run(cmd, input="\n", text=True, check=False)
        else:
            proc = subprocess.run(cmd, stdin=sys.stdin, check=False)  # the user's keypress
        if proc.returncode != 0:
            raise DownloadError(f"{script} -d {ds} -c {c}: exited with status {proc.returncode}; "
                                "see its output above (a rerun resumes)")
        log.info("download: FF++ %s done in %.1fs", ds, time.perf_counter() - t0)


def _terminal() -> bool:
    """Whether stdin is a terminal a person can answer a prompt on."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def _url_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or "download"


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


def download_path(url: str, sha256: str | None, cache: Path) -> Path:
    """Where :func:`prepare_raw` keeps the download of ``url``: one folder per checksum (or per
    URL when there is none) under ``<cache>/downloads``, so two files of the same name never mix."""
    key = sha256.lower().strip() if sha256 else "url-" + hashlib.sha256(url.encode()).hexdigest()
    return Path(cache) / "downloads" / key[:24] / _url_name(url)


def _fetch_cached(url: str, sha256: str | None, cache: Path) -> Path:
    dest = download_path(url, sha256, cache)
    if dest.is_file() and not sha256:
        log.warning("download: reusing %s from an earlier run without a checksum to check it "
                    "against; set data.sha256 to pin it, or delete it to download again", dest)
    return fetch(url, dest, sha256)


def prepare_raw(params: DataParams, raw_dir: Path, cache: Path | None = None) -> DataParams:
    """Fetch what ``data.url`` / ``data.ffpp_downloader`` name; return params with ``root`` set.

    - ``data.url``: an archive fetched into the download cache (``cache``, default
      :func:`cache_root`; see :func:`download_path`), checked against ``data.sha256``, resumed if
      an earlier run was cut, and extracted into ``<raw_dir>/download/extracted``. ``root``
      becomes that folder, or its only sub-folder when the archive wraps everything in one; a
      relative ``data.root`` names a path inside the archive instead (e.g. the CSV of the ``csv``
      source).
    - ``data.ffpp_downloader``: the FF++ script (a path, or a URL, which then needs
      ``data.ffpp_downloader_sha256`` since it is run as a program) is run into ``<cache>/ffpp``,
      which becomes ``root``. It lives in the cache, not in ``raw_dir``, so that a cut run of the
      script resumes (it skips the files it has) instead of starting over; its videos are read in
      place, like a local ``data.root``, and fingerprinted in the video table.
    - neither: ``params`` unchanged (a local ``data.root`` is used in place, never copied).
    """
    raw_dir = Path(raw_dir)
    cache = Path(cache) if cache is not None else cache_root()
    dl = raw_dir / "download"
    if params.url and params.ffpp_downloader:
        raise DownloadError("data.url and data.ffpp_downloader are both set; set only one")
    if params.url:
        if params.root and Path(params.root).is_absolute():
            raise DownloadError(f"data.root = {params.root!r}: with data.url, data.root must be a "
                                "path inside the archive (relative) or null")
        archive = _fetch_cached(params.url, params.sha256, cache)
        extracted = dl / "extracted"
        safe_extract(archive, extracted)
        if params.root:
            root = extracted / params.root
            if not root.exists():
                top = sorted(p.name for p in extracted.iterdir())
                raise DownloadError(f"data.root = {params.root!r}: not found in the archive from "
                                    f"data.url; its top level holds: {', '.join(top[:10]) or 'nothing'}")
        else:
            entries = list(extracted.iterdir())
            root = entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
        log.info("download: data.root -> %s", root)
        return dataclasses.replace(params, root=str(root))
    if params.ffpp_downloader:
        if params.root:
            raise DownloadError("data.root and data.ffpp_downloader are both set; set data.root to "
                                "an existing FF++ folder, or the downloader to fetch one, not both")
        script = params.ffpp_downloader
        want = params.ffpp_downloader_sha256
        if _is_url(script):
            if not want:
                raise DownloadError(f"data.ffpp_downloader = {script!r} is a URL and is run as a "
                                    "program: set data.ffpp_downloader_sha256 to the sha256 of the "
                                    "script (sha256sum <file>)")
            script = str(_fetch_cached(script, want, cache))
        elif want and Path(script).is_file():
            got = sha256_file(Path(script))
            if got != want.lower().strip():
                raise DownloadError(f"data.ffpp_downloader = {script!r}: sha256 {got} does not match "
                                    f"data.ffpp_downloader_sha256 {want}; check the script")
        out = cache / "ffpp"
        run_ffpp_downloader(Path(script), out, params)
        return dataclasses.replace(params, root=str(out))
    return params
