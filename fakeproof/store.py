"""The LMDB face store: every face crop of a dataset in one file, ``<store>/data.mdb``.

Keys are ``<video_id>/<frame:06d>/<face>`` (ASCII; see :func:`face_key`); video ids are unique
across sources, so one store can hold several datasets (:class:`FaceStoreWriter` with
``append=True`` adds a second source to an existing store). A value is a 5-byte header
(encoding tag ``r``/``p``/``j``, height, width as little-endian uint16) followed by the crop
encoded as raw RGB bytes, PNG or JPEG, so a reader decodes any value without outside metadata.

Writing. A writer fills a scratch environment (map size doubled whenever LMDB reports
``MapFullError``; the pending batch is replayed) and on close copies it with
``env.copy(compact=True)`` into a temporary folder that is renamed over the store
(:func:`fakeproof.io.atomic_path`): the store appears whole or not at all, holds only
``data.mdb`` (environments are opened with ``lock=False``, so no ``lock.mdb`` is ever made), and
its bytes are a function of the sequence of puts. A compact copy renumbers pages in tree order,
drops free pages and stamps the meta pages with transaction 1; ``meminit`` zero-fills fresh pages
and the commit batching is fixed (every :data:`COMMIT_EVERY` puts), so the same inputs give the
same ``data.mdb`` byte for byte (checked by ``tests/test_store.py``). The map size is recorded in
the meta pages, so it too starts from a fixed value and grows by doubling only.

Reading. :class:`FaceStore` opens the environment lazily, once per process
(``readonly=True, lock=False, readahead=False``), and pickles without it, so it is safe in
DataLoader workers (fork or spawn). Decoding uses ``torchvision.io`` (libpng, libjpeg-turbo),
which measured faster than PIL for both formats.

Choice of the default encoding (``faces.encoding``): ``python benchmarks/bench_loader.py`` prints,
per encoding and crop size, bytes per crop, write cost and decode speed against training speed
(README, "Benchmarks", has the table measured on the project's 2-core machine). Every encoding
fed training well ahead of its speed from a single core there, so the choice is about size and
fidelity. PNG is lossless (the detector sees exactly the crop cut from the frame) at about 0.6x
raw size; JPEG 95 is smaller again and decodes faster, but re-compresses crops of frames that
were already JPEG, which blurs the high-frequency blending traces detectors learn from. Default:
``png``. ``jpeg`` suits very large datasets where disk matters more; ``raw`` suits small stores
read many times. PNG uses zlib level 1 (:data:`PNG_COMPRESS_LEVEL`): slightly larger than PIL's
default level 6 and a little slower to decode, but several times faster to encode, which keeps
the crop stage near bare MTCNN speed (``benchmarks/bench_crop.py``).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import lmdb
import numpy as np
import torch
from PIL import Image

from fakeproof.io import atomic_path
from fakeproof.errors import FakeproofError

log = logging.getLogger(__name__)

ENCODINGS = ("png", "jpeg", "raw")
DATA_FILE = "data.mdb"
HEADER = struct.Struct("<cHH")  # encoding tag, height, width
_TAG = {"raw": b"r", "png": b"p", "jpeg": b"j"}
_NAME = {v: k for k, v in _TAG.items()}
PNG_COMPRESS_LEVEL = 1
INITIAL_MAP_SIZE = 64 << 20
COMMIT_EVERY = 256


class StoreError(FakeproofError, RuntimeError):
    """The face store is missing, unreadable, or a write would corrupt it (one-line message)."""


# --------------------------------------------------------------------------------------------------
# Keys and values
# --------------------------------------------------------------------------------------------------


def face_key(video_id: str, frame: int, face: int) -> str:
    """The store key of face ``face`` in frame ``frame`` of ``video_id``: ``vid/000042/0``."""
    return f"{video_id}/{int(frame):06d}/{int(face)}"


def encode_image(image: np.ndarray, encoding: str = "png", jpeg_quality: int = 95) -> bytes:
    """Header + encoded crop. ``image`` is RGB uint8 (H, W, 3).

    PNG: PIL, compress level :data:`PNG_COMPRESS_LEVEL`, no ancillary chunks (no time stamps).
    JPEG: PIL, ``jpeg_quality``, 4:4:4 chroma (no subsampling), baseline, no EXIF.
    """
    if encoding not in _TAG:
        raise StoreError(f"encoding {encoding!r}: unknown; use one of {', '.join(ENCODINGS)}")
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise StoreError(f"image of dtype {image.dtype} and shape {image.shape}: expected uint8 (H, W, 3)")
    h, w = image.shape[:2]
    head = HEADER.pack(_TAG[encoding], h, w)
    if encoding == "raw":
        return head + image.tobytes()
    buf = io.BytesIO()
    pil = Image.fromarray(image, "RGB")
    if encoding == "png":
        pil.save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        pil.save(buf, "JPEG", quality=int(jpeg_quality), subsampling=0, optimize=False)
    return head + buf.getvalue()


def value_info(value: bytes) -> tuple[str, int, int]:
    """``(encoding, height, width)`` from a stored value's header."""
    tag, h, w = HEADER.unpack_from(value)
    if tag not in _NAME:
        raise StoreError(f"value with unknown encoding tag {tag!r}: not written by fakeproof.store")
    return _NAME[tag], h, w


def decode_tensor(value: bytes) -> torch.Tensor:
    """Decode a stored value to a uint8 tensor (3, H, W)."""
    from torchvision.io import ImageReadMode, decode_jpeg, decode_png

    encoding, h, w = value_info(value)
    body = torch.frombuffer(bytearray(memoryview(value)[HEADER.size:]), dtype=torch.uint8)
    if encoding == "raw":
        out = body.view(h, w, 3).permute(2, 0, 1)
    elif encoding == "png":
        out = decode_png(body, mode=ImageReadMode.RGB)
    else:
        out = decode_jpeg(body, mode=ImageReadMode.RGB)
    if tuple(out.shape) != (3, h, w):
        raise StoreError(f"stored {encoding} value decodes to {tuple(out.shape)}, header says (3, {h}, {w})")
    return out


def decode_image(value: bytes) -> np.ndarray:
    """Decode a stored value to an RGB uint8 array (H, W, 3)."""
    return np.ascontiguousarray(decode_tensor(value).permute(1, 2, 0).numpy())


# --------------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------------


class FaceStoreWriter:
    """Write face crops into an LMDB store at ``path`` (a folder holding ``data.mdb``).

    Use as a context manager: on a clean exit the store is compact-copied into place; on an error
    nothing at ``path`` changes. With ``append=True`` an existing store's entries are kept and the
    new ones added (a key that exists already raises :class:`StoreError`: sources must not overlap).

    Example::

        with FaceStoreWriter("data/faces.lmdb", encoding="png") as w:
            w.put(face_key("vid", 0, 0), crop)
    """

    def __init__(self, path: str | Path, encoding: str = "png", jpeg_quality: int = 95,
                 append: bool = False, map_size: int = INITIAL_MAP_SIZE,
                 commit_every: int = COMMIT_EVERY) -> None:
        if encoding not in ENCODINGS:
            raise StoreError(f"encoding {encoding!r}: unknown; use one of {', '.join(ENCODINGS)}")
        if map_size < 4096 or commit_every < 1:
            raise StoreError(f"map_size {map_size} / commit_every {commit_every}: must be >= 4096 / >= 1")
        self.path = Path(path)
        self.encoding = encoding
        self.jpeg_quality = int(jpeg_quality)
        self.append = append
        self.map_size = int(map_size)
        self.commit_every = int(commit_every)
        self.written = 0
        self.grown = 0
        self._pending: list[tuple[bytes, bytes]] = []
        self._env: Optional[lmdb.Environment] = None
        self._scratch: Optional[Path] = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def open(self) -> "FaceStoreWriter":
        if self._env is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".scratch",
                                              dir=self.path.parent))
        existing = self.path / DATA_FILE
        map_size = self.map_size
        if self.append and existing.is_file():
            shutil.copyfile(existing, self._scratch / DATA_FILE)
            map_size = max(map_size, _grow_to(existing.stat().st_size * 2, self.map_size))
        elif self.append and self.path.exists():
            self._cleanup()
            raise StoreError(f"{self.path}: exists but holds no {DATA_FILE}; remove it or pass "
                             "append=False to replace it")
        try:
            self._env = lmdb.open(str(self._scratch), map_size=map_size, subdir=True, lock=False,
                                  readahead=False, meminit=True, sync=False, metasync=False,
                                  max_dbs=0)
        except lmdb.Error as e:
            self._cleanup()
            raise StoreError(f"{existing}: cannot open as LMDB ({e}); remove it or write a new store") from None
        return self

    def __enter__(self) -> "FaceStoreWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        """Entries in the store so far (existing ones when appending, plus those put)."""
        if self._env is None:
            return self.written
        self._flush()
        return int(self._env.stat()["entries"])

    # -- writing -----------------------------------------------------------------------------------

    def put(self, key: str, image: np.ndarray) -> None:
        """Encode ``image`` (RGB uint8 H, W, 3) with the writer's encoding and store it at ``key``."""
        self.put_value(key, encode_image(image, self.encoding, self.jpeg_quality))

    def put_value(self, key: str, value: bytes) -> None:
        """Store an already encoded value (header included, see :func:`encode_image`)."""
        if self._env is None:
            raise StoreError(f"{self.path}: writer is not open; use it as a context manager")
        try:
            kb = key.encode("ascii")
        except UnicodeEncodeError:
            raise StoreError(f"key {key!r}: not ASCII; video ids must be filesystem-safe ASCII") from None
        if not kb or len(kb) > 511:
            raise StoreError(f"key {key!r}: must hold 1 to 511 bytes")
        value_info(value)
        self._pending.append((kb, bytes(value)))
        if len(self._pending) >= self.commit_every:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self._env is not None
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    for k, v in self._pending:
                        if not txn.put(k, v, overwrite=False):
                            raise StoreError(
                                f"{self.path}: key {k.decode()!r} is already in the store; keys must "
                                "be unique (was this source written or appended twice?)")
                break
            except lmdb.MapFullError:
                new = self._env.info()["map_size"] * 2
                self._env.set_mapsize(new)
                self.grown += 1
                log.debug("%s: map full, grew to %d MiB", self.path, new >> 20)
        self.written += len(self._pending)
        self._pending.clear()

    def close(self) -> None:
        """Commit, compact-copy into place (atomic rename) and remove the scratch environment."""
        if self._env is None:
            return
        try:
            self._flush()
            with atomic_path(self.path, is_dir=True) as target:
                self._env.copy(str(target), compact=True)
        finally:
            self._cleanup()

    def abort(self) -> None:
        """Discard everything written since open; the store at ``path`` is left as it was."""
        self._pending.clear()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _grow_to(need: int, start: int) -> int:
    """Smallest ``start * 2**k`` that is >= ``need`` (keeps map sizes on one doubling ladder)."""
    size = start
    while size < need:
        size *= 2
    return size


# --------------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------------


# One environment per (process, data file): LMDB forbids opening the same file twice in a process
# (py-lmdb raises), while several datasets (train, val) may read one store. Entries are reference
# counted by the FaceStore objects using them; keys carry the pid so that a forked worker never
# touches its parent's handles.
_ENVS: dict[tuple[int, int, int], list] = {}


def _acquire_env(path: Path) -> tuple[tuple[int, int, int], lmdb.Environment]:
    st = os.stat(path / DATA_FILE)
    key = (os.getpid(), st.st_dev, st.st_ino)
    entry = _ENVS.get(key)
    if entry is None:
        try:
            env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True,
                            max_dbs=0)
        except lmdb.Error as e:
            raise StoreError(f"{path / DATA_FILE}: not a readable LMDB file ({e}); re-run crop_faces") from None
        entry = _ENVS[key] = [env, 0]
    entry[1] += 1
    return key, entry[0]


def _close_inherited() -> None:
    """After fork, in the child: close the parent's environments (py-lmdb refuses to open a file
    that is open in the process, and a forked child inherits that bookkeeping). Closing the
    child's copies does not affect the parent (read-only maps, ``lock=False``)."""
    pid = os.getpid()
    for key in [k for k in _ENVS if k[0] != pid]:
        env = _ENVS.pop(key)[0]
        try:
            env.close()
        except lmdb.Error:  # pragma: no cover - nothing else can be done in a fresh child
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited)


def _release_env(key: tuple[int, int, int]) -> None:
    entry = _ENVS.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        del _ENVS[key]
        entry[0].close()


class FaceStore:
    """Read-only access to a face store; safe to pickle into DataLoader workers.

    ``get(key)`` returns RGB uint8 (H, W, 3); ``get_tensor(key)`` uint8 (3, H, W). Missing keys
    raise ``KeyError`` naming the key and the store. The environment is opened on first use in
    each process; an instance keeps reading the file it first opened even if the store is
    rewritten meanwhile (make a new instance to see the new one).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / DATA_FILE).is_file():
            raise StoreError(f"{self.path}: no {DATA_FILE} here; run the crop_faces stage "
                             "(dvc repro crop_faces) or pass the store folder")
        self._key: Optional[tuple[int, int, int]] = None
        self._env: Optional[lmdb.Environment] = None
        self._txn: Optional[lmdb.Transaction] = None

    def _open(self) -> lmdb.Transaction:
        if self._txn is None or self._key is None or self._key[0] != os.getpid():
            # First use in this process (a DataLoader worker after fork or spawn): never reuse
            # handles inherited from the parent.
            self._txn = self._env = self._key = None
            self._key, self._env = _acquire_env(self.path)
            self._txn = self._env.begin(buffers=False)
        return self._txn

    def close(self) -> None:
        """Release this instance's handles (the environment closes with its last user)."""
        if self._key is not None and self._key[0] == os.getpid():
            if self._txn is not None:
                self._txn.abort()
            _release_env(self._key)
        self._key, self._env, self._txn = None, None, None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: modules may be gone
            pass

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._key, self._env, self._txn = None, None, None

    def get_value(self, key: str) -> bytes:
        """The stored bytes (header + encoded crop) at ``key``."""
        value = self._open().get(key.encode("ascii"))
        if value is None:
            raise KeyError(f"{key!r} not in face store {self.path}; re-run crop_faces "
                           "(faces.csv and the store are out of step)")
        return value

    def get(self, key: str) -> np.ndarray:
        return decode_image(self.get_value(key))

    def get_tensor(self, key: str) -> torch.Tensor:
        return decode_tensor(self.get_value(key))

    def keys(self) -> list[str]:
        """All keys in sorted (byte) order."""
        return list(self.iter_keys())

    def iter_keys(self) -> Iterator[str]:
        with self._open().cursor() as cur:
            for k in cur.iternext(keys=True, values=False):
                yield bytes(k).decode("ascii")

    def __len__(self) -> int:
        self._open()
        assert self._env is not None
        return int(self._env.stat()["entries"])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._open().get(key.encode("ascii")) is not None

    def __iter__(self) -> Iterator[str]:
        return self.iter_keys()

    def __repr__(self) -> str:
        return f"FaceStore({str(self.path)!r})"
