"""The crop_faces stage: MTCNN face detection and the crop policy.

Detection. facenet-pytorch's MTCNN (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016; weights ship in the wheel) runs on
``faces.device`` (``auto``: the GPU when torch sees one) on batches of up to ``faces.batch_size``
frames of the ``faces.videos_per_task`` videos of one task (default 1; MTCNN batches need equal
sizes, so a batch closes when the frame size changes). Frames are first downscaled (PIL bilinear, aspect
kept) so that their longer side is at most ``faces.detect_max_side``, and boxes are scaled back to
frame pixels, as the DFDC winner does (selimsef/dfdc_deepfake_challenge). Parameters:

- ``faces.thresholds``: P-/R-/O-net score thresholds (MTCNN's own; the DFDC winner used
  [0.85, 0.95, 0.95]);
- ``faces.min_face_size``: the smallest face MTCNN searches for, in pixels of the *detection*
  image (the frame after downscaling to ``detect_max_side``): it sets the image pyramid;
- ``faces.min_prob``: faces whose O-net probability is below this are dropped;
- ``faces.select``: ``largest`` keeps the face with the largest box area per frame, ``all`` keeps
  every face, numbered 0, 1, ... by decreasing area (ties: higher probability, then left, top).

Boxes are rounded to 0.01 px and the crops are cut from the rounded boxes, so ``faces.csv`` holds
exactly the geometry used. Beside each box, ``faces.csv`` holds MTCNN's five landmarks in the
**crop's** pixel coordinates (columns :data:`fakeproof.landmarks.LANDMARK_COLUMNS`, 0.01 px; the
blend masks of ``train.sbi`` are built from them). A face cropped with its original's boxes (box
reuse, below) carries the original's landmarks with them; a face with none (never from MTCNN) is
written with the box template of :func:`fakeproof.landmarks.box_points`. Landmarks are written to
the CSV only: the crops, and so the LMDB store, are the same bytes as without them.

Crop policy (:func:`crop_box`). For a box ``(x1, y1, x2, y2)`` with longer side
``s = max(x2 - x1, y2 - y1)`` and centre ``(cx, cy)``, the crop is the square of side
``S = round(s * (1 + 2 * margin))`` (at least 1) whose top-left pixel is
``(floor(cx - S/2 + 0.5), floor(cy - S/2 + 0.5))``: the box grown by ``margin * s`` on each side
(default one third, the DFDC winner's margin), made square about its centre. Parts of the square
outside the frame are filled with black (zeros), never shifted or stretched, so the face stays
centred and the policy is the same at the borders. The square is resized to
``faces.image_size`` x ``faces.image_size`` with PIL bicubic (antialiased when shrinking).

Box reuse. A fake whose ``original`` (a real video) has stored frames is cropped with the
original's boxes for the same frame index when ``faces.reuse_original_boxes`` is true
(``box_source = original``; probabilities are the original's), scaled if the fake's frames have
another size. The crop then shows the same region in both videos and the detector's behaviour on
manipulated faces cannot leak into the crop (DFDC winner's practice). Frames whose index has no
face in the original fall back to detection on the fake (``box_source = self``). Reals are
processed first, so every original is detected before its fakes; only the boxes of reals that
some fake refers to are kept in memory (a few floats per frame).

Parallelism (:mod:`fakeproof.parallel`). The stage runs in two waves, reals then fakes (a fake's
task carries its original's boxes). Each wave is cut into tasks of ``faces.videos_per_task``
videos, run by ``faces.workers`` local processes (0, the default: every core; 1: this process)
or by the workers of the Dask scheduler at ``faces.scheduler``. A worker builds MTCNN once, runs
it on one intra-op thread, and returns encoded crops and CSV rows; this process writes them in
one fixed order. Detection batches depend on the params only, never on which worker ran them,
so the LMDB store and ``faces.csv`` are byte-identical to a run in this process
(``tests/test_parallel_preprocess.py``, for local processes and a 2-worker Dask LocalCluster)
and to the single-process implementation before parallelism. On a GPU every local worker holds
its own CUDA context (worker k takes GPU k mod count); ``videos_per_task: 8`` with a larger
``batch_size`` gives MTCNN bigger batches there. CPU and GPU boxes differ slightly (other
kernels), so switching devices can move a box by a rounding step.

Determinism. Detection runs with ``torch.use_deterministic_algorithms(True)`` (MTCNN's CPU ops
all support it) on one intra-op thread (:data:`DETECT_THREADS`); both settings are restored
afterwards. With one thread the results do not depend on the machine's core count (MTCNN's boxes
move by about 1e-5 px between 1 and 2 threads, which the 0.01 px rounding absorbs except at
rounding boundaries; CPU instruction sets can differ likewise). Outputs are byte-identical
between runs (``faces.csv`` and ``data.mdb``; checked by ``tests/test_faces.py``).

Speed and memory: ``benchmarks/bench_crop.py`` measures the stage against bare
``MTCNN.detect()`` and its peak memory at 10x the demo's size (the numbers are in README's
Benchmarks table). One thread is also the fast choice on a shared machine (OpenMP threads wait on
each other). A background thread reads and JPEG-decodes the next batch of frames while MTCNN runs
(:func:`prefetch`). Frames stream one batch at a time, at most two tasks per worker are in flight,
and memory is flat in the number of videos. R-/O-net inputs are padded to a multiple of 32
candidates (:class:`PadBatch`) because oneDNN caches a compiled primitive per input shape, which
made memory grow with the number of videos.

The package, by part: :mod:`~fakeproof.faces.geometry` (:class:`Face` and the crop policy),
:mod:`~fakeproof.faces.mtcnn` (detection: :class:`FaceCropper`, devices, determinism),
:mod:`~fakeproof.faces.batching` (tasks of videos cut into MTCNN batches, with box reuse) and
:mod:`~fakeproof.faces.stage` (the crop_faces stage: waves, executor, outputs).
"""

from fakeproof.faces.batching import ChunkResult, VideoResult, VideoTask, crop_groups, crop_task
from fakeproof.faces.geometry import Face, crop_box, crop_face, crop_square
from fakeproof.faces.mtcnn import (CANDIDATE_MULTIPLE, DETECT_THREADS, PNET_MULTIPLE, FaceCropper,
                                   FacesError, PadBatch, detection_size, deterministic_torch,
                                   resolve_device)
from fakeproof.faces.stage import FACES_CSV_COLUMNS, run_crop_faces
from fakeproof.parallel import prefetch  # noqa: F401  (also used by fakeproof.detect)

__all__ = ["CANDIDATE_MULTIPLE", "DETECT_THREADS", "FACES_CSV_COLUMNS", "PNET_MULTIPLE",
           "ChunkResult", "Face", "FaceCropper", "FacesError", "PadBatch", "VideoResult", "VideoTask", "crop_box",
           "crop_face", "crop_groups", "crop_square", "crop_task", "detection_size",
           "deterministic_torch", "prefetch", "resolve_device", "run_crop_faces"]
