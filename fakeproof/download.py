"""Getting a dataset onto disk: resumable HTTP(S) downloads, safe archive extraction, and the
FaceForensics++ official download script.

- :func:`fetch` downloads to ``<dest>.part``, resumes it with an HTTP ``Range`` request, restarts
  when a server ignores ``Range``, checks a sha256 and renames the file into place when complete.
- :func:`safe_extract` unpacks .zip / .tar / .tar.gz / .tgz / .tar.bz2 / .tar.xz after checking
  every member first: absolute names, ``..`` components, links (symbolic or hard: all refused, the
  simplest rule that cannot be tricked, and no dataset release needs them) and device or FIFO
  entries make it refuse the whole archive, naming the member, before anything is written. It
  unpacks into a temporary sibling and renames it over ``dest``.
- :func:`run_ffpp_downloader` runs the FF++ script users receive after the authors' form.
- :func:`prepare_raw` is what the download stage calls before building the video table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from fakeproof.config import DataParams
from fakeproof.io import atomic_path
from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
FFPP_DATASETS_ACTORS = ("DeepFakeDetection_original", "DeepFakeDetection")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(FakeproofError, RuntimeError):
    """A download, checksum, archive or downloader run failed (message: one line)."""


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
    dest.parent.mkdir(parents=True, exist_ok=True)
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


def _members(archive: Path) -> list[tuple[PurePosixPath, bool, object]]:
    """Checked members as (relative path, is_dir, handle); raises before anything is written."""
    out = []
    if archive_kind(archive) == "zip":
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"{archive}: not a valid zip ({e})") from None
        with zf:
            for info in zf.infolist():
                rel = _check_name(archive, info.filename)
                ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when not made on Unix
                if ftype == stat.S_IFLNK:
                    raise DownloadError(f"{archive}: member {info.filename!r} is a symbolic link; "
                                        "refusing to extract (links are not allowed)")
                if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                    raise DownloadError(f"{archive}: member {info.filename!r} is not a regular "
                                        "file or folder; refusing to extract")
                out.append((rel, info.is_dir(), info))
        return out
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DownloadError(f"{archive}: not a valid tar archive ({e})") from None
    with tf:
        for info in tf.getmembers():
            rel = _check_name(archive, info.name)
            if info.issym() or info.islnk():
                raise DownloadError(f"{archive}: member {info.name!r} is a link to "
                                    f"{info.linkname!r}; refusing to extract (links are not allowed)")
            if not (info.isfile() or info.isdir()):
                raise DownloadError(f"{archive}: member {info.name!r} is a device, FIFO or other "
                                    "special file; refusing to extract")
            out.append((rel, info.isdir(), info))
    return out


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract ``archive`` into ``dest`` safely; return the extracted files (sorted, under ``dest``).

    Every member is checked before anything is written (see the module docstring); extraction goes
    to a temporary sibling that replaces ``dest`` only when complete, so a refused or broken archive
    leaves ``dest`` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DownloadError(f"{archive}: no such archive")
    t0 = time.perf_counter()
    members = _members(archive)
    files: list[PurePosixPath] = []
    with atomic_path(dest, is_dir=True) as tmp:
        if archive_kind(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                for rel, is_dir, info in tqdm(members, desc=f"extract {archive.name}", leave=False):
                    if _place(tmp, rel, is_dir, archive):
                        with zf.open(info) as src, open(tmp / rel, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                        files.append(rel)
        else:
            with tarfile.open(archive, "r:*") as tf:
                for rel, is_dir, info in tqdm(members, desc=f"extract {archive.name}", leave=False):
                    if _place(tmp, rel, is_dir, archive):
                        src = tf.extractfile(info)
                        if src is None:  # pragma: no cover - regular files always have data
                            raise DownloadError(f"{archive}: member {info.name!r} has no data")
                        with src, open(tmp / rel, "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                        files.append(rel)
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
    The script asks to press a key to accept the FaceForensics terms of use (``input()``): by setting
    ``data.ffpp_downloader`` the user states they accepted them, and a newline is fed on stdin. The
    script skips files it already has, so a rerun resumes. Its output goes to the terminal.
    """
    script, out_dir = Path(script), Path(out_dir)
    if not script.is_file():
        raise DownloadError(f"data.ffpp_downloader = {str(script)!r}: no such file; give the path of "
                            "the download script the FaceForensics++ authors sent you")
    out_dir.mkdir(parents=True, exist_ok=True)
    c = params.ffpp.compression
    server = getattr(params.ffpp, "server", None)
    for ds in ffpp_datasets(params):
        cmd = [sys.executable, str(script), str(out_dir), "-d", ds, "-c", c, "-t", "videos"]
        if server:
            cmd += ["--server", str(server)]
        t0 = time.perf_counter()
        log.info("download: running the FF++ downloader for %s (%s)", ds, c)
        proc = subprocess.run(cmd, input="\n", text=True, check=False)
        if proc.returncode != 0:
            raise DownloadError(f"{script} -d {ds} -c {c}: exited with status {proc.returncode}; "
                                "see its output above (a rerun resumes)")
        log.info("download: FF++ %s done in %.1fs", ds, time.perf_counter() - t0)


def _url_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or "download"


def _is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


def prepare_raw(params: DataParams, raw_dir: Path) -> DataParams:
    """Fetch what ``data.url`` / ``data.ffpp_downloader`` name; return params with ``root`` set.

    - ``data.url``: an archive fetched into ``<raw_dir>/download`` (checked against
      ``data.sha256``) and extracted into ``<raw_dir>/download/extracted``. ``root`` becomes that
      folder, or its only sub-folder when the archive wraps everything in one; a relative
      ``data.root`` names a path inside the archive instead (e.g. the CSV of the ``csv`` source).
    - ``data.ffpp_downloader``: the FF++ script (a path, or a URL to fetch it from) is run into
      ``<raw_dir>/download``, which becomes ``root``.
    - neither: ``params`` unchanged (a local ``data.root`` is used in place, never copied).
    """
    raw_dir = Path(raw_dir)
    dl = raw_dir / "download"
    if params.url and params.ffpp_downloader:
        raise DownloadError("data.url and data.ffpp_downloader are both set; set only one")
    if params.url:
        if params.root and Path(params.root).is_absolute():
            raise DownloadError(f"data.root = {params.root!r}: with data.url, data.root must be a "
                                "path inside the archive (relative) or null")
        archive = fetch(params.url, dl / _url_name(params.url), params.sha256)
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
        if _is_url(script):
            script = str(fetch(script, dl / "scripts" / (_url_name(script) or "ffpp_download.py")))
        out = dl / "ffpp"
        run_ffpp_downloader(Path(script), out, params)
        return dataclasses.replace(params, root=str(out))
    return params
