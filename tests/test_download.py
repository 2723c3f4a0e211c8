"""Downloads against a real local HTTP server (http.server on 127.0.0.1, port 0, with Range support),
real archive extraction with hostile members and zip bombs, the FF++ downloader runner, and the
download stage's cut-and-resume through the download cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import stat
import tarfile
import textwrap
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakeproof.config import DataParams, FFppParams
from fakeproof.archives import safe_extract
from fakeproof.download import ffpp_datasets, prepare_raw, run_ffpp_downloader
from fakeproof.fetch import CACHE_ENV, DownloadError, download_path, fetch
from fakeproof.sources import build_video_table

DATA = np.random.default_rng(0).integers(0, 256, 700_001, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(DATA).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``: /ranged/* honour Range, /plain/* ignore it, /short/* send half of
    the body on the first request and then behave like /ranged/*."""

    def do_GET(self):  # noqa: N802 - http.server API
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        ranged = self.path.startswith(("/ranged/", "/short/"))
        if rng and ranged:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.startswith("/short/") and not srv.cut_done:
            srv.cut_done = True
            body = body[: len(body) // 2]
            self.close_connection = True
        srv.sent += len(body)  # counted before the write: the client may finish reading first
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """The download cache of every test: in tmp_path, never the project's .fakeproof-cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"/ranged/data.bin": DATA, "/plain/data.bin": DATA, "/short/data.bin": DATA}
    srv.requests, srv.sent, srv.cut_done = [], 0, False
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_full_download(server, tmp_path):
    dest = tmp_path / "dl" / "data.bin"
    assert fetch(server.base + "/ranged/data.bin", dest, SHA, chunk=65536) == dest
    assert dest.read_bytes() == DATA
    assert not dest.with_suffix(".bin.part").exists()
    assert server.requests == [("/ranged/data.bin", None)]
    # Present with the right checksum: no second request.
    fetch(server.base + "/ranged/data.bin", dest, SHA)
    assert len(server.requests) == 1


def test_resume_from_partial(server, tmp_path):
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    part.write_bytes(DATA[:300_000])
    fetch(server.base + "/ranged/data.bin", dest, SHA, chunk=65536)
    assert dest.read_bytes() == DATA and not part.exists()
    assert server.requests == [("/ranged/data.bin", "bytes=300000-")]
    assert server.sent == len(DATA) - 300_000


def test_interrupted_download_resumes_on_rerun(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=r"incomplete \(350000 of 700001 bytes\); run again"):
        fetch(server.base + "/short/data.bin", dest, SHA)
    assert (tmp_path / "data.bin.part").stat().st_size == 350_000 and not dest.exists()
    fetch(server.base + "/short/data.bin", dest, SHA)
    assert dest.read_bytes() == DATA
    assert server.requests[-1] == ("/short/data.bin", "bytes=350000-")


def test_complete_part_answered_416(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(DATA)
    fetch(server.base + "/ranged/data.bin", tmp_path / "data.bin", SHA)
    assert (tmp_path / "data.bin").read_bytes() == DATA and server.sent == 0


def test_server_ignoring_range_restarts(server, tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"\x00garbage" * 1000)
    fetch(server.base + "/plain/data.bin", dest, SHA)
    assert dest.read_bytes() == DATA
    assert server.requests == [("/plain/data.bin", "bytes=8000-")]
    assert server.sent == len(DATA)


def test_checksum_mismatch_deletes_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=r"sha256 [0-9a-f]{64} does not match data.sha256 0{64}") as e:
        fetch(server.base + "/ranged/data.bin", dest, "0" * 64)
    assert "\n" not in str(e.value)
    assert not dest.exists() and not (tmp_path / "data.bin.part").exists()


def test_404_is_a_clear_error(server, tmp_path):
    url = server.base + "/ranged/missing.zip"
    with pytest.raises(DownloadError, match=r"missing.zip: HTTP 404 Not Found; check data.url") as e:
        fetch(url, tmp_path / "missing.zip")
    assert "\n" not in str(e.value) and url in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on this port any more
    with pytest.raises(DownloadError, match=r"cannot connect"):
        fetch(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", timeout=5)


# ------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------

GOOD = {"ds/real/a.mp4": b"real-a", "ds/fake/a_b.mp4": b"fake-ab", "ds/List.txt": b"1 x\n"}


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("kind", ["tar.gz", "tgz", "tar", "zip"])
def test_safe_extract_good_archive(tmp_path, kind):
    archive = tmp_path / f"good.{kind}"
    if kind == "zip":
        make_zip(archive, [("ds/", b""), *GOOD.items()])
    else:
        dir_info = tarfile.TarInfo("ds")
        dir_info.type = tarfile.DIRTYPE
        make_tar(archive, [dir_info, *GOOD.items()])
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "stale.txt").write_text("replaced by the new extraction")
    files = safe_extract(archive, dest)
    assert files == sorted(dest / k for k in GOOD)
    assert {str(p.relative_to(dest)): p.read_bytes() for p in files} == GOOD
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good." + kind, "out"]  # no temp left


def _tar_link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _tar_dev(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    info.devmajor, info.devminor = 1, 3
    return info


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


BAD = {
    "tar-dotdot": ("bad.tar.gz", [("ds/ok.txt", b"ok"), ("ds/../../evil.txt", b"evil")],
                   r"member 'ds/../../evil.txt' contains '..'"),
    "tar-absolute": ("bad.tar", [("ds/ok.txt", b"ok"), ("/tmp/fakeproof-evil.txt", b"evil")],
                     r"member '/tmp/fakeproof-evil.txt' has an absolute path"),
    "tar-symlink": ("bad.tgz", [("ds/ok.txt", b"ok"), _tar_link("ds/link", "../../outside")],
                    r"member 'ds/link' is a link to '../../outside'"),
    "tar-hardlink": ("bad.tar", [("ds/ok.txt", b"ok"), _tar_link("ds/hard", "/etc/passwd", True)],
                     r"member 'ds/hard' is a link"),
    "tar-device": ("bad.tar", [("ds/ok.txt", b"ok"), _tar_dev("ds/null")],
                   r"member 'ds/null' is a device"),
    "zip-dotdot": ("bad.zip", [("ds/ok.txt", b"ok"), ("../evil.txt", b"evil")],
                   r"member '../evil.txt' contains '..'"),
    "zip-absolute": ("bad.zip", [("ds/ok.txt", b"ok"), (zipfile.ZipInfo("/evil.txt"), b"evil")],
                     r"member '/evil.txt' has an absolute path"),
    "zip-symlink": ("bad.zip", [("ds/ok.txt", b"ok"), (_zip_symlink("ds/link"), b"../../outside")],
                    r"member 'ds/link' is a symbolic link"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_safe_extract_rejects_hostile_archives(tmp_path, case):
    name, members, match = BAD[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = work / name
    if name.endswith(".zip"):
        make_zip(archive, members)
    else:
        make_tar(archive, members)
    dest = work / "deep" / "out"
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("must survive")
    before = snapshot(tmp_path)
    with pytest.raises(DownloadError, match=match) as e:
        safe_extract(archive, dest)
    assert "\n" not in str(e.value) and str(archive) in str(e.value)
    assert snapshot(tmp_path) == before  # dest untouched, nothing written next to or above it
    assert not Path("/tmp/fakeproof-evil.txt").exists()


def test_safe_extract_rejects_unknown_format(tmp_path):
    f = tmp_path / "data.rar"
    f.write_bytes(b"Rar!")
    with pytest.raises(DownloadError, match=r"data.rar: not a supported archive"):
        safe_extract(f, tmp_path / "out")
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match=r"broken.zip: not a valid zip"):
        safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# prepare_raw and the FF++ downloader
# ------------------------------------------------------------------------------------------------


def test_prepare_raw_url_extracts_and_sets_root(server, tmp_path, cache):
    archive = make_tar(tmp_path / "mine.tar.gz", [("mine/real/abc.mp4", b"r"),
                                                  ("mine/fake/abc_x.mp4", b"f")])
    server.files["/ranged/mine.tar.gz"] = archive.read_bytes()
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    raw = tmp_path / "raw"
    params = DataParams(source="folder", url=server.base + "/ranged/mine.tar.gz", sha256=sha)
    out = prepare_raw(params, raw)
    assert out.root == str(raw / "download" / "extracted" / "mine")  # single top folder unwrapped
    # The archive stays in the cache (no DVC out), keyed by its checksum; not in raw.
    kept = cache / "downloads" / sha[:24] / "mine.tar.gz"
    assert download_path(params.url, sha, cache) == kept and kept.read_bytes() == archive.read_bytes()
    assert not (raw / "download" / "mine.tar.gz").exists()
    # A second run extracts the cached archive again without a request.
    n = len(server.requests)
    prepare_raw(params, tmp_path / "raw_again")
    assert len(server.requests) == n
    videos = build_video_table(out, raw).videos
    assert list(videos["video_id"]) == ["folder_fake_abc_x", "folder_real_abc"]
    assert set(videos["group"]) == {"folder_abc"}
    # A relative data.root names a path inside the archive.
    out2 = prepare_raw(DataParams(source="folder", url=params.url, sha256=sha, root="mine/real"), raw)
    assert out2.root == str(raw / "download" / "extracted" / "mine" / "real")
    with pytest.raises(DownloadError, match=r"data.root = 'nope': not found in the archive.*mine"):
        prepare_raw(DataParams(source="folder", url=params.url, root="nope"), raw)
    # No url, no downloader: unchanged (a local root is used in place).
    local = DataParams(source="folder", root=str(tmp_path))
    assert prepare_raw(local, raw) is local


FAKE_FFPP = textwrap.dedent("""\
    # A stand-in for the FaceForensics++ download script (the real one needs the authors' form and
    # the internet). It checks the arguments the real script takes, requires the terms-of-use
    # keypress on stdin, logs its argv and writes the layout the real script writes.
    import argparse, json, os, shutil, sys
    DATASETS = {"original": "original_sequences/youtube",
                "DeepFakeDetection_original": "original_sequences/actors",
                "Deepfakes": "manipulated_sequences/Deepfakes",
                "DeepFakeDetection": "manipulated_sequences/DeepFakeDetection",
                "Face2Face": "manipulated_sequences/Face2Face",
                "FaceShifter": "manipulated_sequences/FaceShifter",
                "FaceSwap": "manipulated_sequences/FaceSwap",
                "NeuralTextures": "manipulated_sequences/NeuralTextures"}
    FILES = {"original": ["071", "054"], "DeepFakeDetection_original": ["01__kitchen"],
             "DeepFakeDetection": ["01_02__kitchen__ABCDEFGH"]}
    p = argparse.ArgumentParser()
    p.add_argument("output_path")
    p.add_argument("-d", "--dataset", choices=list(DATASETS) + ["all"], default="all")
    p.add_argument("-c", "--compression", choices=["raw", "c23", "c40"], default="raw")
    p.add_argument("-t", "--type", choices=["videos", "masks", "models"], default="videos")
    p.add_argument("--server", choices=["EU", "EU2", "CA"], default="EU")
    args = p.parse_args()
    print("Press any key to continue, or CTRL-C to exit.")
    input("")
    with open(os.environ["FAKE_FFPP_LOG"], "a") as fh:
        fh.write(json.dumps(sys.argv[1:]) + "\\n")
    if os.environ.get("FAKE_FFPP_FAIL") == args.dataset:
        sys.exit(1)
    out = os.path.join(args.output_path, DATASETS[args.dataset], args.compression, args.type)
    os.makedirs(out, exist_ok=True)
    for name in FILES.get(args.dataset, ["071_054", "054_071"]):
        shutil.copyfile(os.environ["FAKE_FFPP_CLIP"], os.path.join(out, name + ".mp4"))
""")


@pytest.fixture
def fake_ffpp(tmp_path, monkeypatch) -> Path:
    script = tmp_path / "faceforensics_download_v4.py"
    script.write_text(FAKE_FFPP)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"stand-in bytes: sources list files, the extract stage decodes them")
    monkeypatch.setenv("FAKE_FFPP_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_FFPP_CLIP", str(clip))
    monkeypatch.delenv("FAKE_FFPP_FAIL", raising=False)
    return script


def _calls(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_ffpp_downloader_runs_per_dataset(fake_ffpp, tmp_path):
    """The one stand-in allowed here: the official FF++ script is sent by its authors after a form
    and downloads from their servers, so a script with the same command line and output layout
    plays its part; everything around it (subprocess, stdin keypress, layout, source) is real."""
    params = DataParams(source="ffpp", ffpp_downloader=str(fake_ffpp), ffpp=FFppParams(
        compression="c40", methods=["Deepfakes", "FaceSwap"], include_actors=True,
        accept_terms=True))
    raw = tmp_path / "raw"
    out = prepare_raw(params, raw)
    dl = tmp_path / "cache" / "ffpp"  # in the cache, so a cut run resumes; not in raw
    assert out.root == str(dl) and not (raw / "download").exists()
    expected = ["original", "Deepfakes", "FaceSwap", "DeepFakeDetection_original", "DeepFakeDetection"]
    assert ffpp_datasets(params) == expected
    assert _calls(tmp_path) == [[str(dl), "-d", d, "-c", "c40", "-t", "videos"] for d in expected]
    videos = build_video_table(out, raw).videos.set_index("video_id")
    assert sorted(videos.index) == sorted([
        "ffpp_c40_real_071", "ffpp_c40_real_054", "ffpp_c40_Deepfakes_071_054",
        "ffpp_c40_Deepfakes_054_071", "ffpp_c40_FaceSwap_071_054", "ffpp_c40_FaceSwap_054_071",
        "ffpp_c40_actors_01__kitchen", "ffpp_c40_DeepFakeDetection_01_02__kitchen__ABCDEFGH"])
    assert videos.loc["ffpp_c40_FaceSwap_054_071", "split_hint"] == "train"


def test_ffpp_downloader_failure_and_url(fake_ffpp, tmp_path, server, monkeypatch):
    params = DataParams(source="ffpp", ffpp_downloader=str(fake_ffpp),
                        ffpp=FFppParams(methods=["Deepfakes"], accept_terms=True))
    monkeypatch.setenv("FAKE_FFPP_FAIL", "Deepfakes")
    with pytest.raises(DownloadError, match=r"-d Deepfakes -c c23: exited with status 1"):
        run_ffpp_downloader(fake_ffpp, tmp_path / "out", params)
    with pytest.raises(DownloadError, match=r"data.ffpp_downloader = .*no such file"):
        run_ffpp_downloader(tmp_path / "nope.py", tmp_path / "out", params)
    with pytest.raises(DownloadError, match=r"both set"):
        prepare_raw(DataParams(source="ffpp", ffpp_downloader=str(fake_ffpp), root=str(tmp_path)),
                    tmp_path / "raw")
    # The script can be given by URL (the link the authors send): it is run as a program, so a
    # URL needs data.ffpp_downloader_sha256; nothing is fetched without it.
    monkeypatch.delenv("FAKE_FFPP_FAIL")
    server.files["/ranged/faceforensics_download_v4.py"] = fake_ffpp.read_bytes()
    script_url = server.base + "/ranged/faceforensics_download_v4.py"
    url_params = DataParams(source="ffpp", ffpp_downloader=script_url,
                            ffpp=FFppParams(methods=["Deepfakes"], accept_terms=True))
    n = len(server.requests)
    with pytest.raises(DownloadError, match=r"is a URL and is run as a program: set "
                                            r"data.ffpp_downloader_sha256") as e:
        prepare_raw(url_params, tmp_path / "raw2")
    assert "\n" not in str(e.value) and len(server.requests) == n
    with pytest.raises(DownloadError, match=r"does not match data.sha256 0{64}"):
        prepare_raw(dataclasses.replace(url_params, ffpp_downloader_sha256="0" * 64),
                    tmp_path / "raw2")
    sha = hashlib.sha256(fake_ffpp.read_bytes()).hexdigest()
    out = prepare_raw(dataclasses.replace(url_params, ffpp_downloader_sha256=sha), tmp_path / "raw2")
    assert download_path(script_url, sha, tmp_path / "cache").is_file()
    assert Path(out.root, "manipulated_sequences/Deepfakes/c23/videos/071_054.mp4").is_file()
    assert _calls(tmp_path)[-1][1:] == ["-d", "Deepfakes", "-c", "c23", "-t", "videos"]
    # A local script with a sha256 given is checked too.
    with pytest.raises(DownloadError, match=r"sha256 [0-9a-f]{64} does not match "
                                            r"data.ffpp_downloader_sha256 1{64}"):
        prepare_raw(dataclasses.replace(params, ffpp_downloader_sha256="1" * 64), tmp_path / "raw3")


def test_ffpp_terms_are_never_answered_for_the_user(fake_ffpp, tmp_path):
    """Without data.ffpp.accept_terms the prompt is the user's to answer: with no terminal (as
    here: pytest's stdin is not a tty) the stage stops before running the script."""
    params = DataParams(source="ffpp", ffpp_downloader=str(fake_ffpp),
                        ffpp=FFppParams(methods=["Deepfakes"]))
    assert params.ffpp.accept_terms is False  # the default
    with pytest.raises(DownloadError, match=r"asks you to accept the FaceForensics terms of use, "
                                            r"and there is no terminal.*data.ffpp.accept_terms: "
                                            r"true") as e:
        prepare_raw(params, tmp_path / "raw")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "calls.jsonl").exists()  # the script never ran


def test_ffpp_downloader_reads_the_prompt_from_the_terminal(fake_ffpp, tmp_path, monkeypatch):
    """With a terminal and accept_terms false, nothing is fed on stdin: the script reads the
    keypress itself (here stdin is /dev/null standing in for a terminal, so its input() fails)."""
    import sys

    import fakeproof.download as dl

    monkeypatch.setattr(dl, "_terminal", lambda: True)
    with open("/dev/null") as null:
        monkeypatch.setattr(sys, "stdin", null)
        params = DataParams(source="ffpp", ffpp_downloader=str(fake_ffpp),
                            ffpp=FFppParams(methods=["Deepfakes"]))
        with pytest.raises(DownloadError, match=r"-d original -c c23: exited with status 1"):
            run_ffpp_downloader(fake_ffpp, tmp_path / "out", params)
    assert not (tmp_path / "calls.jsonl").exists()  # input() got EOF: no keypress was sent


# ------------------------------------------------------------------------------------------------
# Zip bombs: caps on members and expanded size
# ------------------------------------------------------------------------------------------------


def test_safe_extract_caps_member_count(tmp_path):
    members = [(f"ds/{i}.txt", b"x") for i in range(3)]
    for archive in (make_zip(tmp_path / "many.zip", members), make_tar(tmp_path / "many.tar", members)):
        dest = tmp_path / f"out_{archive.suffix[1:]}"
        with pytest.raises(DownloadError, match=r"more than 2 members; refusing to extract \(a zip "
                                                r"bomb\?.*MAX_EXTRACT_MEMBERS\)") as e:
            safe_extract(archive, dest, max_members=2)
        assert "\n" not in str(e.value) and str(archive) in str(e.value)
        assert not dest.exists()
        assert len(safe_extract(archive, dest, max_members=3)) == 3


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_safe_extract_caps_expanded_size(tmp_path, kind):
    """10 MiB of zeros compress to a few KiB: refused under a 1 MiB cap before anything is written."""
    zeros = bytes(10 << 20)
    archive = tmp_path / f"bomb.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("ds/small.txt", b"ok")
            zf.writestr("ds/zeros.bin", zeros)
    else:
        make_tar(archive, [("ds/small.txt", b"ok"), ("ds/zeros.bin", zeros)])
    assert archive.stat().st_size < 100_000
    before = snapshot(tmp_path)
    with pytest.raises(DownloadError, match=r"expands to (more than )?10.0 MiB, over the cap of "
                                            r"1.0 MiB; refusing to extract") as e:
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20)
    assert "\n" not in str(e.value)
    assert snapshot(tmp_path) == before
    out = safe_extract(archive, tmp_path / "out", max_bytes=(10 << 20) + 2)  # exactly fits
    assert [p.stat().st_size for p in out] == [2, 10 << 20]


def test_safe_extract_member_larger_than_declared(tmp_path):
    """A zip whose headers declare 10 bytes for a 100 kB member: never more than the declared
    bytes are written, and the archive is refused as damaged (its CRC cannot match)."""
    archive = make_zip(tmp_path / "liar.zip", [("ds/big.bin", bytes(100_000))])
    raw = bytearray(archive.read_bytes())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size fields
        at = raw.index(sig) + off
        raw[at:at + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with pytest.raises(DownloadError, match=r"liar.zip: damaged archive \(Bad CRC-32") as e:
        safe_extract(archive, tmp_path / "out", max_bytes=1000)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# The download stage: cut and resumed through the cache; content fingerprints in videos.csv
# ------------------------------------------------------------------------------------------------


def _rand(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_cut_download_resumes_in_the_next_run(server, tmp_path, cache):
    """The connection drops mid-file: the stage fails with one line, data/raw is not written, the
    partial file survives in the cache (outside data/raw's temp folder) and the next run fetches
    only the missing bytes with a Range request."""
    from fakeproof.download import run_download

    clips = {"ds/real/a.mp4": _rand(300_000, 1), "ds/fake/a_x.mp4": _rand(300_000, 2)}
    archive = make_tar(tmp_path / "ds.tar", list(clips.items())).read_bytes()
    sha = hashlib.sha256(archive).hexdigest()
    server.files["/short/ds.tar"] = archive
    params = DataParams(source="folder", url=server.base + "/short/ds.tar", sha256=sha)
    raw = tmp_path / "data" / "raw"
    with pytest.raises(DownloadError, match=r"ds.tar: incomplete \(\d+ of \d+ bytes\); run again "
                                            r"to resume") as e:
        run_download(params, raw)
    assert "\n" not in str(e.value)
    assert not raw.exists() and list(raw.parent.iterdir()) == []  # no temp folder left either
    part = download_path(params.url, sha, cache).with_suffix(".tar.part")
    cut = part.stat().st_size
    assert cut == len(archive) // 2 and part.read_bytes() == archive[:cut]

    stats = run_download(params, raw)
    assert server.requests == [("/short/ds.tar", None), ("/short/ds.tar", f"bytes={cut}-")]
    assert server.sent == len(archive)  # every byte sent once: resumed, not restarted
    kept = download_path(params.url, sha, cache)
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == sha and not part.exists()
    videos = pd.read_csv(raw / "videos.csv", keep_default_na=False).set_index("video_id")
    assert stats["videos"] == 2 and stats["fingerprints_hashed"] == 2
    for rel, data in clips.items():
        vid = "folder_" + rel.split("/")[1] + "_" + Path(rel).stem
        assert videos.loc[vid, "path"] == (raw / "download" / "extracted" / rel).as_posix()
        assert Path(videos.loc[vid, "path"]).read_bytes() == data
        assert videos.loc[vid, "sha256"] == hashlib.sha256(data).hexdigest()


@pytest.fixture
def local_root(tmp_path) -> Path:
    root = tmp_path / "mine"
    for rel, seed in (("real/a.mp4", 1), ("fake/a_x.mp4", 2), ("real/b.mp4", 3)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_rand(50_000, seed))
    return root


def test_fingerprint_follows_content_not_size_or_mtime(local_root, tmp_path, cache, monkeypatch):
    import fakeproof.download as download

    calls = []
    real_hash = download.sha256_file
    monkeypatch.setattr(download, "sha256_file", lambda p, *a, **k: calls.append(Path(p).name)
                        or real_hash(p, *a, **k))
    params = DataParams(source="folder", root=str(local_root))
    raw = tmp_path / "raw"

    def table() -> pd.DataFrame:
        return pd.read_csv(raw / "videos.csv", keep_default_na=False).set_index("video_id")

    stats = download.run_download(params, raw)
    first = (raw / "videos.csv").read_bytes()
    want = {f"folder_{p.parent.name}_{p.stem}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in local_root.rglob("*.mp4")}
    assert table()["sha256"].to_dict() == want
    assert (stats["fingerprints_hashed"], stats["fingerprints_cached"], len(calls)) == (3, 0, 3)
    assert (cache / "fingerprints.sqlite").is_file()

    # A re-scan of unchanged files hashes nothing and writes the same table.
    calls.clear()
    stats = download.run_download(params, raw)
    assert (stats["fingerprints_hashed"], stats["fingerprints_cached"], calls) == (0, 3, [])
    assert (raw / "videos.csv").read_bytes() == first

    # Same size, same mtime, other bytes: a new fingerprint (only that file is hashed again).
    clip = local_root / "real" / "a.mp4"
    st = clip.stat()
    data = bytearray(clip.read_bytes())
    data[1000] ^= 0xFF
    clip.write_bytes(bytes(data))
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (clip.stat().st_size, clip.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    calls.clear()
    stats = download.run_download(params, raw)
    assert calls == ["a.mp4"] and stats["fingerprints_hashed"] == 1
    got = table()["sha256"]
    assert got["folder_real_a"] == hashlib.sha256(bytes(data)).hexdigest() != want["folder_real_a"]
    assert got.drop("folder_real_a").to_dict() == {k: v for k, v in want.items()
                                                   if k != "folder_real_a"}
    assert (raw / "videos.csv").read_bytes() != first


def test_fingerprints_of_files_written_by_the_run_bypass_the_cache(tmp_path, caplog):
    from fakeproof.download import FingerprintCache, fingerprint_files

    fresh, kept = tmp_path / "run" / "new.mp4", tmp_path / "old.mp4"
    fresh.parent.mkdir()
    fresh.write_bytes(b"generated now")
    kept.write_bytes(b"a dataset file")
    db = tmp_path / "fp.sqlite"
    cache = FingerprintCache(db)
    digests, stats = fingerprint_files([str(fresh), str(kept)], cache, fresh_under=fresh.parent)
    cache.close()
    assert digests == [hashlib.sha256(b"generated now").hexdigest(),
                       hashlib.sha256(b"a dataset file").hexdigest()]
    assert stats == {"hashed": 2, "cached": 0, "hashed_bytes": 27}
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT path FROM digests")] == [os.path.realpath(kept)]
    # An unusable cache file is reported and ignored: digests are computed, never guessed.
    with caplog.at_level(logging.WARNING, logger="fakeproof.download"):
        broken = FingerprintCache(tmp_path)  # a folder, not a database file
        assert fingerprint_files([str(kept)], broken)[0] == digests[1:]
    assert "unusable" in caplog.text
