"""The ``fakeproof`` command: one subcommand per DVC stage, plus ``detect`` and ``models``.

The DVC stage scripts in ``stages/`` call :func:`stage_main`; every stage reads ``params.yaml``
through the one typed loader and writes only its declared outs. Errors that a user can fix (a bad
param, a missing file, an unusable dataset root) end the command with one line on stderr and exit
code 2; nothing already written is touched, since every output is written to a temp path and renamed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from fakeproof.config import DEFAULT_CHECKPOINT, PARAMS_FILE, ParamsError, load_params
from fakeproof.errors import FakeproofError

log = logging.getLogger("fakeproof")

# No path lives here: dvc.yaml passes every input and output path on each stage's command line.


def _data(args: argparse.Namespace):
    from fakeproof.data import DataPaths

    return DataPaths(Path(args.store), Path(args.faces), Path(args.splits))


def cmd_download(args: argparse.Namespace) -> dict:
    from fakeproof.download import run_download

    return run_download(load_params(args.params).data, Path(args.out))


def cmd_extract_frames(args: argparse.Namespace) -> dict:
    from fakeproof.frames import run_extract_frames

    return run_extract_frames(load_params(args.params), Path(args.videos), Path(args.out))


def cmd_crop_faces(args: argparse.Namespace) -> dict:
    from fakeproof.faces import run_crop_faces

    return run_crop_faces(load_params(args.params), Path(args.videos), Path(args.frames),
                          Path(args.store), Path(args.faces))


def cmd_split(args: argparse.Namespace) -> dict:
    from fakeproof.splits import run_split

    return run_split(load_params(args.params).split, Path(args.videos), Path(args.faces),
                     Path(args.out))


def _data_parallel(args: argparse.Namespace, params) -> Optional[dict]:
    """With ``train.nproc > 1`` outside a process group, re-run this stage under torch's elastic
    launcher (one process per rank) and return its outcome; else None (train here)."""
    from fakeproof.runtime import in_process_group, launch_data_parallel

    if params.train.nproc <= 1 or in_process_group():
        return None
    code = launch_data_parallel(params.train.nproc, ["-m", "fakeproof", *args.argv])
    if code != 0:
        raise ParamsError(f"train.nproc = {params.train.nproc}: the data-parallel run failed "
                          f"(exit {code}); see the log above")
    return {"nproc": params.train.nproc}


def _training_stage(args: argparse.Namespace, run: Callable[..., dict], *inputs: Path) -> dict:
    """A training stage: relaunched under DDP when ``train.nproc`` asks, else ``run`` here; the
    launching process writes its cost record (``--cost``: wall time and hardware,
    :mod:`fakeproof.cost`)."""
    from fakeproof.cost import write_cost
    from fakeproof.runtime import in_process_group

    t0 = time.perf_counter()
    params = load_params(args.params)
    launched = _data_parallel(args, params)
    stats = launched if launched is not None else run(
        params, _data(args), *inputs, Path(args.out), Path(args.metrics), Path(args.curve),
        Path(args.tensorboard), Path(args.resume))
    if not in_process_group():
        write_cost(args.cost, args.command, time.perf_counter() - t0, params.train.device,
                   params.train.nproc)
    return stats


def cmd_pretrain(args: argparse.Namespace) -> dict:
    from fakeproof.train import run_pretrain

    return _training_stage(args, run_pretrain)


def cmd_adv_finetune(args: argparse.Namespace) -> dict:
    from fakeproof.train import run_adv_finetune

    return _training_stage(args, run_adv_finetune, Path(args.clean))


def _named_checkpoints(specs: Sequence[str], flag: str = "--checkpoint") -> dict[str, Path]:
    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ParamsError(f"{flag} {spec!r}: use NAME=PATH, e.g. {flag} mine=models/x.pt")
        out[name] = Path(path)
    return out


def cmd_evaluate(args: argparse.Namespace) -> dict:
    from fakeproof.evaluate import run_evaluate

    params = load_params(args.params)
    checkpoints = _named_checkpoints(args.checkpoint or [])
    if not checkpoints:
        raise ParamsError("evaluate: give at least one --checkpoint NAME=PATH")
    cross = None
    if params.eval.cross:
        from fakeproof.data import DataPaths

        cross = DataPaths.under(params.eval.cross)
        for p in (cross.store, cross.faces_csv, cross.splits_csv):
            if not p.exists():
                raise ParamsError(f"eval.cross = {params.eval.cross!r}: {p} not found; point it at "
                                  "another run's data/ folder (faces.lmdb, faces.csv, splits.csv)")
    return run_evaluate(params, _data(args), checkpoints, Path(args.headline), Path(args.detail),
                        Path(args.plots), cross, out_corruptions=Path(args.corruptions))


def cmd_ensemble(args: argparse.Namespace) -> dict:
    from fakeproof.ensemble import run_ensemble

    return run_ensemble(load_params(args.params), _data(args),
                        _named_checkpoints(args.member or [], "--member"), Path(args.out),
                        Path(args.metrics), Path(args.headline), Path(args.plots),
                        Path(args.evaluated) if args.evaluated else None)


def cmd_compare(args: argparse.Namespace) -> dict:
    from dataclasses import replace

    from fakeproof.compare import default_data, print_result, run_compare
    from fakeproof.config import parse_fraction

    params = load_params(args.params)
    given = [args.store, args.faces, args.splits]
    if any(given) and not all(given):
        raise ParamsError("compare: give --store, --faces and --splits together, or none "
                          "(then dvc.yaml's paths)")
    data = _data(args) if all(given) else default_data()
    ep = params.eval if args.bootstrap is None else replace(params.eval, bootstrap=args.bootstrap)
    eps = ep.headline_eps if args.eps is None else parse_fraction(args.eps, "--eps")
    print_result(run_compare(args.a, args.b, data, ep, eps,
                             device=params.train.device), args.json)
    return {}


def cmd_detect(args: argparse.Namespace) -> dict:
    from fakeproof.detect import run_detect

    # No params.yaml: everything inference needs comes from the checkpoint's recipe.
    return run_detect(args.inputs, Path(args.checkpoint), device=args.device, as_json=args.json)


def cmd_models(args: argparse.Namespace) -> dict:
    from fakeproof.models import list_models, model_config

    for name in list_models():
        cfg = model_config(name)
        weights = f"  [imagenet: {cfg.weights}]" if cfg.weights else ""
        print(f"{name:20s} input {cfg.input_size:4d}  {cfg.paper}{weights}")
    return {}


def cmd_leaderboard(args: argparse.Namespace) -> dict:
    from fakeproof.leaderboard import run_leaderboard

    if args.from_exps and args.grid:
        raise ParamsError("leaderboard: give --grid or --from-exps, not both")
    if (args.set or args.seeds) and not args.grid:
        raise ParamsError("leaderboard: --set and --seeds shape a --grid; give --grid KEY=V1,V2")
    groups = run_leaderboard(Path("."), Path(args.out), grid=args.grid or (), fixed=args.set or (),
                             seeds=args.seeds, jobs=args.jobs, targets=args.target or ("evaluate",),
                             revs=args.rev or (), all_commits=args.all_commits,
                             queue_only=args.queue_only)
    if groups:
        print((Path(args.out) / "leaderboard.md").read_text())
    return {"groups": len(groups)}


def cmd_report(args: argparse.Namespace) -> dict:
    from fakeproof.report import run_report

    return run_report(args.base)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], dict], str]] = {
    "download": (cmd_download, "fetch or generate the dataset; write data/raw/videos.csv"),
    "extract_frames": (cmd_extract_frames, "sample frames from every video with ffmpeg"),
    "crop_faces": (cmd_crop_faces, "MTCNN face crops into the LMDB store"),
    "split": (cmd_split, "leakage-proof video-level train/val/test split"),
    "pretrain": (cmd_pretrain, "clean training with model selection on val"),
    "adv_finetune": (cmd_adv_finetune, "PGD adversarial fine-tuning of the clean model"),
    "evaluate": (cmd_evaluate, "clean and adversarial metrics over the eps sweep on test"),
    "ensemble": (cmd_ensemble, "fuse checkpoints (weights fitted on val); attack the fused logit"),
    "compare": (cmd_compare, "two checkpoints or experiments on the same test videos, with p-values"),
    "detect": (cmd_detect, "score videos or images with a trained checkpoint"),
    "models": (cmd_models, "list the registered detectors"),
    "report": (cmd_report, "Markdown: changed headline metrics and plots against a git revision"),
    "leaderboard": (cmd_leaderboard, "rank experiments (or a grid it runs) by robust balanced "
                                     "accuracy, with paired differences"),
}


#: Commands that read no params.yaml: detect takes everything from the checkpoint's recipe.
READS_NO_PARAMS = ("detect", "models", "report")
_DATA = (("--store", "face store (LMDB folder)"), ("--faces", "face index CSV"),
         ("--splits", "split table CSV"))
_TRAIN_OUTS = (("--out", "checkpoint to write"), ("--metrics", "metrics JSON to write"),
               ("--curve", "per-epoch curve CSV to write"),
               ("--tensorboard", "TensorBoard log folder (scratch, not a DVC out)"),
               ("--resume", "resume state file (scratch, not a DVC out; deleted on success)"),
               ("--cost", "training cost JSON to write (wall time, hardware)"))
#: The path arguments of each stage, all required: dvc.yaml is the one place that names paths.
STAGE_ARGS: dict[str, tuple[tuple[str, str], ...]] = {
    "download": (("--out", "raw data folder to write (holds videos.csv)"),),
    "extract_frames": (("--videos", "videos.csv"), ("--out", "frames folder to write")),
    "crop_faces": (("--videos", "videos.csv"), ("--frames", "frames folder"),
                   ("--store", "face store to write"), ("--faces", "face index CSV to write")),
    "split": (("--videos", "videos.csv"), ("--faces", "face index CSV"),
              ("--out", "split table CSV to write")),
    "pretrain": _DATA + _TRAIN_OUTS,
    "adv_finetune": _DATA + (("--clean", "the pretrained checkpoint"),) + _TRAIN_OUTS,
    "evaluate": _DATA + (("--headline", "headline metrics JSON to write"),
                         ("--detail", "detail metrics JSON to write"),
                         ("--plots", "plots folder to write"),
                         ("--corruptions", "common-corruption metrics JSON to write")),
    "ensemble": _DATA + (("--out", "ensemble checkpoint to write"),
                         ("--metrics", "detail metrics JSON to write"),
                         ("--headline", "headline metrics JSON to write"),
                         ("--plots", "plots folder to write")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fakeproof", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name not in READS_NO_PARAMS:
            p.add_argument("--params", default=PARAMS_FILE,
                           help="params file (default: params.yaml)")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        for flag, help_ in STAGE_ARGS.get(name, ()):
            p.add_argument(flag, required=True, help=help_)
        if name == "evaluate":
            p.add_argument("--checkpoint", action="append", metavar="NAME=PATH", required=True,
                           help="a checkpoint to evaluate under NAME (repeatable)")
        if name == "ensemble":
            p.add_argument("--member", action="append", metavar="NAME=PATH", required=True,
                           help="a member checkpoint under NAME (repeatable)")
            p.add_argument("--evaluated", help="evaluate's logits.csv: the members' scores and "
                           "PGD examples it measured are reused, not measured again")
        if name == "compare":
            p.add_argument("a", metavar="A", help="checkpoint file, or dvc experiment / git "
                           "revision (NAME or NAME:PATH; PATH default: dvc.yaml's path.robust)")
            p.add_argument("b", metavar="B", help="the other one; differences are B - A")
            p.add_argument("--eps", default=None, help="PGD eps for the attacked comparison "
                           "(0: clean only); default eval.headline_eps")
            p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
            p.add_argument("--bootstrap", type=int, help="bootstrap draws (default: eval.bootstrap)")
            for flag, what in _DATA:
                p.add_argument(flag, help=f"test {what} (default: dvc.yaml's vars)")
        if name == "leaderboard":
            p.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                           help="a grid axis (repeatable); cells not yet measured are queued and "
                           "run as DVC experiments")
            p.add_argument("--set", action="append", metavar="KEY=V",
                           help="an override every grid cell shares (repeatable)")
            p.add_argument("--seeds", type=int, help="repeat each cell with train.seed = adv.seed "
                           "= 0..N-1 and report the spread")
            p.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (default 1)")
            p.add_argument("--target", action="append", metavar="STAGE",
                           help="stage each cell runs up to (default: evaluate)")
            p.add_argument("--queue-only", action="store_true",
                           help="queue the grid's missing cells and leave running them to "
                           "workers you start (one per GPU: README)")
            p.add_argument("--from-exps", action="store_true",
                           help="rank the experiments that exist (the default without --grid)")
            p.add_argument("--rev", action="append", metavar="REV",
                           help="also experiments of this git revision (as dvc exp show --rev)")
            p.add_argument("-A", "--all-commits", action="store_true",
                           help="experiments of every commit (as dvc exp show -A)")
            p.add_argument("--out", default="build/leaderboard",
                           help="folder for leaderboard.md, .json and .png (default: build/leaderboard)")
        if name == "report":
            p.add_argument("--base", default="main", help="git revision to compare with (default: main)")
        if name == "detect":
            p.add_argument("inputs", nargs="+", metavar="PATH",
                           help="videos, images, or folders of them (recursive)")
            p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                           help=f"default: {DEFAULT_CHECKPOINT}")
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
            p.add_argument("--device", default="auto",
                           help="auto (CUDA when available), cpu or cuda[:N]; default: auto")
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("PIL", "matplotlib", "fsspec", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a busy 2-core
    # machine spinning made training steps 2-5x slower (measured here: 6.5 vs 15 img/s under
    # load); a free machine loses nothing.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    _setup_logging(args.verbose)
    fn = COMMANDS[args.command][0]
    t0 = time.perf_counter()
    try:
        stats = fn(args)
    except FakeproofError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"fakeproof {args.command}: error: {msg}", file=sys.stderr)
        return 2
    if args.command not in ("detect", "models", "report", "compare", "leaderboard"):
        log.info("stage %s done in %.1fs: %s", args.command, time.perf_counter() - t0,
                 _summary(stats))
    return 0


def _summary(stats: dict) -> str:
    keep = {k: v for k, v in (stats or {}).items() if not isinstance(v, (dict, list))}
    return ", ".join(f"{k}={v}" for k, v in list(keep.items())[:12])


def stage_main(stage: str) -> None:
    """Entry point of ``stages/<stage>.py``: ``python stages/<stage>.py [--params FILE]``."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main([stage, *sys.argv[1:]]))

