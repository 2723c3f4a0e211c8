"""The embedded demo dataset: real and manipulated talking-head clips made offline from five photos.

``data.source: demo`` (the default) needs no download. The public-domain photos in
``fakeproof/assets/faces`` (Obama x3, Biden, astronaut Eileen Collins; attribution in
``SOURCES.md`` there) are turned into short h264 clips:

- **Real clips** (:mod:`fakeproof.demo.clips`): a virtual hand-held camera films one photo with
  smooth translation and roll, a slow zoom drift, exposure/gamma/colour-temperature drift, a talking
  motion (jaw opening at syllable rate, with a head bob) and signal-dependent sensor noise; the face
  box fills 36-46 % of the frame height (more for a photo cut tight around the head). Each clip has
  its own seed, so one photo gives many different recordings.
- **Face swaps** (:func:`fakeproof.demo.manipulate.face_swap`): the other person's face, aligned by
  MTCNN's five landmarks with a least-squares similarity (Umeyama 1991) through a low-resolution
  face chip, colour-corrected in YCbCr and blended with a feathered inner-face hull, frame by frame,
  as graphics face swaps (FaceForensics++ FaceSwap, Rossler et al., ICCV 2019) do.
- **Self-blended images** (:func:`fakeproof.demo.manipulate.self_blend`): each frame blended with a
  colour-, frequency- and geometry-jittered copy of itself through a deformed, feathered landmark
  hull (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images", CVPR 2022).

Groups (:mod:`fakeproof.demo.dataset`) hold two real clips of different people and their four
fakes (a swap each way and an SBI of each), so real:fake is 1:2 and a group can be split as one.
Generation is deterministic: the same ``data.seed`` and ``data.demo`` give byte-identical files.
"""

from fakeproof.demo.clips import Clip, Photo, load_photos, render_real
from fakeproof.demo.dataset import (CLIP_KINDS, ClipSpec, generate, pair_schedule, plan,
                                     render_group)
from fakeproof.demo.landmarks import Face, FaceNotFoundError, detect_face, detect_faces, umeyama
from fakeproof.demo.manipulate import face_swap, self_blend

__all__ = [
    "CLIP_KINDS", "Clip", "ClipSpec", "Face", "FaceNotFoundError", "Photo", "detect_face",
    "detect_faces", "face_swap", "generate", "load_photos", "pair_schedule", "plan", "render_group",
    "render_real", "self_blend", "umeyama",
]
