"""Face photos for the benchmarks: a folder given on the command line, else the packaged demo photos."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image


def load_photos(folder: str | None) -> list[np.ndarray]:
    if folder:
        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".png"))
    else:
        root = resources.files("fakeproof") / "assets" / "faces"
        files = sorted(p for p in root.iterdir() if p.name.endswith(".jpg"))
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out
