"""Resumable HTTP(S) downloads into the download cache.

- :func:`fetch` downloads to ``<dest>.part``, resumes it with an HTTP ``Range`` request, restarts
  when a server ignores ``Range``, checks a sha256 and renames the file into place when complete.
- :func:`download_path` is where a URL's download is kept in the cache, :func:`fetch_cached`
  fetches it there.

Downloads live in :func:`cache_root` (``.fakeproof-cache/`` at the project root, git- and
dvc-ignored), not in ``data/raw``: DVC deletes a stage's outs before running it and the stage
writes ``data/raw`` through a temporary folder that is removed on error, so a partial file kept
there could never be resumed. A killed or cut download leaves ``<name>.part`` in the cache and the
next run resumes it; a finished, checked archive stays there, so ``dvc repro -f download``
extracts it again without downloading it again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

CACHE_ENV = "FAKEPROOF_CACHE"
DEFAULT_CACHE = ".fakeproof-cache"
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


def _url_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or "download"


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https", "file")


def download_path(url: str, sha256: str | None, cache: Path) -> Path:
    """Where :func:`fakeproof.download.prepare_raw` keeps the download of ``url``: one folder per checksum (or per
    URL when there is none) under ``<cache>/downloads``, so two files of the same name never mix."""
    key = sha256.lower().strip() if sha256 else "url-" + hashlib.sha256(url.encode()).hexdigest()
    return Path(cache) / "downloads" / key[:24] / _url_name(url)


def fetch_cached(url: str, sha256: str | None, cache: Path) -> Path:
    dest = download_path(url, sha256, cache)
    if dest.is_file() and not sha256:
        log.warning("download: reusing %s from an earlier run without a checksum to check it "
                    "against; set data.sha256 to pin it, or delete it to download again", dest)
    return fetch(url, dest, sha256)
