"""Real video compression: a video's face-crop sequence encoded by ffmpeg with libx264 at a
constant rate factor (CRF 23-43) and decoded back, the way platforms re-encode uploads
(DeeperForensics-1.0's video-compression distortion, VC, is the same operation at CRF 30-40 on
whole videos).

The crops of one video go in frame order as one clip (25 fps, yuv420p, x264 preset ``medium``,
one thread, so the bytes are deterministic); inter-frame prediction therefore sees the sampled
frames, not consecutive ones, which makes it a somewhat harsher stand-in for re-encoding the
whole video at that CRF. Crops of odd size are padded by edge replication to even (4:2:0) and cut
back. ffmpeg runs from pipe to pipe, with ``-protocol_whitelist file,pipe`` and, on decoding, only
the raw h264 demuxer allowed; the binary is :func:`fakeproof.video.ffmpeg_exe` (ffmpeg on PATH,
else imageio-ffmpeg's). A clip that ffmpeg cannot encode or decode whole raises
:class:`CorruptionError`; the evaluate stage skips that video and counts it.
"""

from __future__ import annotations

import subprocess
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from fakeproof.corruptions._base import CorruptionError, corruption, to_uint8
from fakeproof.video import ffmpeg_exe, passthrough_option

FPS = 25
TIMEOUT_S = 300
_COMMON = ("-hide_banner", "-nostdin", "-v", "error", "-protocol_whitelist", "file,pipe")


def _ffmpeg(args: list[str], data: bytes, what: str) -> bytes:
    try:
        proc = subprocess.run([ffmpeg_exe(), *_COMMON, *args], input=data, capture_output=True,
                              timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CorruptionError(f"h264: ffmpeg {what} did not run ({type(e).__name__}: {e})") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CorruptionError(f"h264: ffmpeg {what} failed ({err[-1][:200] if err else 'no output'})")
    return proc.stdout


def encode_decode(frames: np.ndarray, crf: int) -> np.ndarray:
    """RGB uint8 frames (N, H, W, 3) with even H and W through libx264 at ``crf`` and back."""
    n, h, w, _ = frames.shape
    stream = _ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(FPS),
                      "-i", "pipe:", "-an", "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
                      "-pix_fmt", "yuv420p", "-threads", "1",
                      "-x264-params", "threads=1:lookahead-threads=1", "-f", "h264", "pipe:"],
                     np.ascontiguousarray(frames, dtype=np.uint8).tobytes(), f"encode at CRF {crf}")
    raw = _ffmpeg(["-format_whitelist", "h264", "-f", "h264", "-i", "pipe:", "-f", "rawvideo",
                   "-pix_fmt", "rgb24", f"-{passthrough_option()}", "passthrough", "pipe:"], stream, "decode")
    if len(raw) != n * h * w * 3:
        raise CorruptionError(f"h264: decoded {len(raw) // max(1, h * w * 3)} of {n} frames at "
                              f"CRF {crf}")
    return np.frombuffer(raw, np.uint8).reshape(n, h, w, 3)


@corruption("h264")
def corrupt(images: Tensor, amount: float, generator: Optional[torch.Generator]) -> Tensor:
    """The crops of one video (N, 3, H, W), in frame order, re-encoded at the CRF of
    ``severity``; ``generator`` is unused (the encoder is deterministic)."""
    h, w = images.shape[-2:]
    frames = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    out = encode_decode(frames, int(amount))[:, :h, :w]
    return torch.from_numpy(out.copy()).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
