"""The download stage: fetch (or generate) a dataset and write the video table.

What it fetches: an archive named by ``data.url`` (HTTP in :mod:`fakeproof.fetch`, extraction in
:mod:`fakeproof.archives`) or the FaceForensics++ official download script's videos
(:func:`run_ffpp_downloader`); :func:`prepare_raw` is what the stage calls before building the
video table.

``data/raw/`` is written whole or not at all: generated and downloaded files go to a temp folder
that is renamed into place, and the table's paths are rewritten to the final location. Local
dataset roots (``data.root``) are read in place and never copied; only ``videos.csv`` and
``problems.csv`` land in ``data/raw/`` for them.

Videos outside ``data/`` are invisible to DVC, so the table carries each video's content
fingerprint, the sha256 of its bytes (column :data:`fakeproof.sources.FINGERPRINT`): a changed
video changes ``videos.csv``, and every stage that depends on it runs again. Size and mtime are not
enough (a copy or a re-encode can keep both). Hashing a large dataset takes minutes (sha256 reads
about 0.7 GB/s per core here), so digests are remembered in a SQLite file in the cache folder
(:func:`fakeproof.fetch.cache_root`), keyed by the file's real path, size, mtime, ctime, inode
and device: a re-scan hashes only files whose key changed. ctime is in the key because mtime can
be set back (``touch -r``, ``os.utime``) after an edit while ctime cannot, so an edited file is
always hashed again. Files the stage itself wrote (the demo, an extracted archive) are new on every
run and are hashed without the cache.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import pandas as pd
from tqdm import tqdm

from fakeproof.config import DataParams
from fakeproof.archives import safe_extract
from fakeproof.fetch import DownloadError, is_url, cache_root, fetch_cached, sha256_file
from fakeproof.io import atomic_path, write_csv
from fakeproof.sources import FINGERPRINT, SourceError, build_video_table

log = logging.getLogger(__name__)

FINGERPRINT_DB = "fingerprints.sqlite"
HASH_WORKERS = 4  # hashlib releases the GIL: a few threads keep a fast disk busy
_COMMIT_EVERY = 64
FFPP_DATASETS_ACTORS = ("DeepFakeDetection_original", "DeepFakeDetection")


def _relocate(paths: pd.Series, tmp: Path, final: Path) -> pd.Series:
    def fix(p: str) -> str:
        try:
            return (final / Path(p).resolve().relative_to(tmp.resolve())).as_posix()
        except ValueError:
            return p
    return paths.map(fix)


def _stat_key(path: Path) -> tuple[str, int, int, int, int, int]:
    st = path.stat()
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
            st.st_dev)


class FingerprintCache:
    """sha256 digests of files, remembered in SQLite by (real path, size, mtime_ns, ctime_ns,
    inode, device). ``db=None`` keeps nothing. An unusable database file (read-only, a network
    file system without locks) is logged and ignored: the digests are then computed, never guessed.
    """

    def __init__(self, db: Path | None) -> None:
        self.db, self.conn = db, None
        if db is None:
            return
        try:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(db))
            self.conn.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, "
                              "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, ino INTEGER, "
                              "dev INTEGER, sha256 TEXT)")
            self.conn.commit()
        except (sqlite3.Error, OSError) as e:
            log.warning("download: fingerprint cache %s unusable (%s); hashing every video", db, e)
            self.conn = None

    def get(self, key: tuple) -> str | None:
        if self.conn is None:
            return None
        try:
            row = self.conn.execute("SELECT size, mtime_ns, ctime_ns, ino, dev, sha256 FROM digests "
                                    "WHERE path = ?", (key[0],)).fetchone()
        except sqlite3.Error:
            return None
        return row[5] if row and tuple(row[:5]) == key[1:] else None

    def put(self, key: tuple, digest: str) -> None:
        if self.conn is None:
            return
        try:
            self.conn.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (*key, digest))
        except sqlite3.Error as e:
            log.warning("download: fingerprint cache %s: %s; not caching", self.db, e)
            self.close()

    def commit(self) -> None:
        if self.conn is not None:
            try:
                self.conn.commit()
            except sqlite3.Error:  # pragma: no cover - disk full or similar
                self.close()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.commit()
                self.conn.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self.conn = None


def _hash_checked(path: Path, key: tuple) -> str:
    digest = sha256_file(path)
    if _stat_key(path) != key:
        raise SourceError(f"{path}: changed while it was being fingerprinted; run the download "
                          "stage again when nothing writes to the dataset")
    return digest


def fingerprint_files(paths: Iterable[str], cache: FingerprintCache,
                      fresh_under: Path | None = None) -> tuple[list[str], dict]:
    """The sha256 of each file of ``paths`` (in order), and counts ``hashed`` / ``cached`` /
    ``hashed_bytes``.

    Files under ``fresh_under`` (written by this run) bypass the cache. Raises
    :class:`SourceError` for a file that vanished or changed while being read.
    """
    paths = [Path(p) for p in paths]
    fresh_root = os.path.realpath(fresh_under) + os.sep if fresh_under is not None else None
    digests: list[str | None] = [None] * len(paths)
    todo: list[tuple[int, tuple, bool]] = []
    for i, p in enumerate(paths):
        try:
            key = _stat_key(p)
        except OSError as e:
            raise SourceError(f"{p}: cannot read it to fingerprint it ({e.strerror}); check the "
                              "dataset") from None
        fresh = fresh_root is not None and key[0].startswith(fresh_root)
        digests[i] = None if fresh else cache.get(key)
        if digests[i] is None:
            todo.append((i, key, fresh))
    n_bytes = sum(key[1] for _, key, _ in todo)
    with ThreadPoolExecutor(max_workers=min(HASH_WORKERS, os.cpu_count() or 1)) as pool, \
            tqdm(total=n_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="fingerprint",
                 leave=False, disable=not todo) as bar:
        jobs = [(i, key, fresh, pool.submit(_hash_checked, paths[i], key)) for i, key, fresh in todo]
        try:
            for done, (i, key, fresh, job) in enumerate(jobs, 1):
                try:
                    digests[i] = job.result()
                except OSError as e:
                    raise SourceError(f"{paths[i]}: cannot read it to fingerprint it "
                                      f"({e.strerror}); check the dataset") from None
                bar.update(key[1])
                if not fresh:
                    cache.put(key, digests[i])
                    if done % _COMMIT_EVERY == 0:  # a killed scan keeps what it hashed
                        cache.commit()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # do not hash the rest first
            cache.commit()
            raise
    cache.commit()
    stats = {"hashed": len(todo), "cached": len(paths) - len(todo), "hashed_bytes": n_bytes}
    return [str(d) for d in digests], stats


def run_download(params: DataParams, raw_dir: Path, cache: Path | None = None) -> dict:
    """Run ``data.source`` into ``raw_dir``; write ``videos.csv`` and ``problems.csv`` there.

    ``cache`` (default :func:`fakeproof.fetch.cache_root`) keeps downloads and fingerprints.
    """

    t0 = time.perf_counter()
    raw_dir = Path(raw_dir)
    cache = Path(cache) if cache is not None else cache_root()
    with atomic_path(raw_dir, is_dir=True) as tmp:
        resolved = prepare_raw(params, tmp, cache)
        res = build_video_table(resolved, tmp)
        videos = res.videos.copy()
        t1 = time.perf_counter()
        fp = FingerprintCache(cache / FINGERPRINT_DB)
        try:
            videos[FINGERPRINT], fp_stats = fingerprint_files(videos["path"], fp, fresh_under=tmp)
        finally:
            fp.close()
        fp_seconds = time.perf_counter() - t1
        videos["path"] = _relocate(videos["path"], tmp, raw_dir)
        problems = res.problems.copy()
        if len(problems):
            problems["path"] = _relocate(problems["path"].astype(str), tmp, raw_dir)
        write_csv(tmp / "videos.csv", videos)
        write_csv(tmp / "problems.csv", problems)
    stats = {"videos": int(len(videos)), "fake": int(videos["label"].sum()),
             "real": int((videos["label"] == 0).sum()), "groups": int(videos["group"].nunique()),
             "problems": int(len(problems)), "fingerprints_hashed": fp_stats["hashed"],
             "fingerprints_cached": fp_stats["cached"],
             "hashed_mb": round(fp_stats["hashed_bytes"] / 1e6, 1),
             "seconds": round(time.perf_counter() - t0, 1)}
    if len(problems):
        log.warning("download: %d problems reported in %s", len(problems), raw_dir / "problems.csv")
    log.info("download: fingerprints: %d videos hashed (%.1f MB), %d from the cache %s; %.1fs",
             fp_stats["hashed"], fp_stats["hashed_bytes"] / 1e6, fp_stats["cached"],
             cache / FINGERPRINT_DB, fp_seconds)
    log.info("download (%s): %d videos (%d real, %d fake) in %d groups; %.1fs", params.source,
             stats["videos"], stats["real"], stats["fake"], stats["groups"], stats["seconds"])
    return stats


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


def prepare_raw(params: DataParams, raw_dir: Path, cache: Path | None = None) -> DataParams:
    """Fetch what ``data.url`` / ``data.ffpp_downloader`` name; return params with ``root`` set.

    - ``data.url``: an archive fetched into the download cache (``cache``, default
      :func:`fakeproof.fetch.cache_root`; see :func:`fakeproof.fetch.download_path`), checked against ``data.sha256``, resumed if
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
        archive = fetch_cached(params.url, params.sha256, cache)
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
        if is_url(script):
            if not want:
                raise DownloadError(f"data.ffpp_downloader = {script!r} is a URL and is run as a "
                                    "program: set data.ffpp_downloader_sha256 to the sha256 of the "
                                    "script (sha256sum <file>)")
            script = str(fetch_cached(script, want, cache))
        elif want and Path(script).is_file():
            got = sha256_file(Path(script))
            if got != want.lower().strip():
                raise DownloadError(f"data.ffpp_downloader = {script!r}: sha256 {got} does not match "
                                    f"data.ffpp_downloader_sha256 {want}; check the script")
        out = cache / "ffpp"
        run_ffpp_downloader(Path(script), out, params)
        return dataclasses.replace(params, root=str(out))
    return params
