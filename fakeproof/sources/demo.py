"""The embedded demo dataset (``data.source: demo``), made offline: see :mod:`fakeproof.demo`."""

from __future__ import annotations

from pathlib import Path

from fakeproof.config import DataParams
from fakeproof.demo.dataset import generate
from fakeproof.sources import SourceResult, register_source


@register_source("demo")
def build(params: DataParams, raw_dir: Path) -> SourceResult:
    """Render ``data.demo.groups`` groups of clips into ``raw_dir/videos`` and return their table.

    Each group holds two real clips of two different people and four fakes made from them (a face
    swap each way and a self-blended image of each): real:fake is 1:2. ``path`` is
    ``raw_dir/videos/<video_id>.mp4`` (relative if ``raw_dir`` is); ``split_hint`` is empty.
    """
    return SourceResult(generate(params.demo, params.seed, raw_dir))
