"""Temporary git + DVC repositories for the end-to-end tests: real ``git``, real ``dvc``.

:func:`make_project` copies this project's pipeline (``dvc.yaml``, ``stages/``, ``fakeproof/``) into
a fresh repo with its own ``params.yaml``: the code defaults with :data:`TINY` merged in (a 36-clip
demo, 3 frames per clip, 64 px crops, one or two epochs), never the workspace's params.yaml.
:func:`copy_repo` duplicates a finished repo (git history, DVC cache and run cache included), so that
several tests start from one ``dvc repro`` and each may change its own copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from _params import default_params_raw

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", "stages", "fakeproof", ".dvcignore", ".gitignore")

TINY = {
    "data": {"demo": {"groups": 6, "frames": 8, "fps": 8, "size": 128, "crf": 23}},
    "frames": {"count": 3},
    "faces": {"image_size": 64, "batch_size": 8},
    "model": {"name": "smallcnn", "pretrained": None},
    "train": {"epochs": 2, "batch_size": 16, "patience": 2},
    "adv": {"eps": "8/255", "epochs": 1, "warmup_epochs": 0, "steps": 2, "select_steps": 3,
            "val_eps": ["8/255"], "select_videos": 4},
    "eval": {"preset": "quick", "eps": [0, "2/255", "8/255"], "attacks": ["fgsm", "pgd", "square"],
             "headline_eps": "8/255", "pgd_steps": 3, "square_queries": 10, "bootstrap": 10,
             "gallery": 2, "corruptions": ["brightness"], "corruption_severities": [3]},
}

#: ``dvc exp run`` overrides that only shrink evaluate (which an adv.* change re-runs anyway):
#: one attack at two eps.
CHEAP_EVAL = ("-S", "eval.attacks=[pgd]", "-S", "eval.eps=[0,8/255]")


def run(cmd: list[str], cwd: Path, check: bool = True,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with this interpreter's bin folder first on PATH; on failure (when
    ``check``) raise an AssertionError holding the tail of its output. ``timeout`` bounds a hang
    (subprocess.TimeoutExpired), it measures nothing.

    ``cwd`` leads PYTHONPATH, so stages import the repo's own copy of ``fakeproof`` (the code DVC
    hashed as their deps), not the editable install of the workspace, which may change mid-test.
    """
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(Path(cwd).resolve()),
                                                        os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return run([str(Path(sys.executable).parent / "dvc"), *args], cwd, check, timeout)


def git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(["git", *args], cwd, check)


def init_repo(dest: Path) -> Path:
    """An empty git + DVC repo at ``dest`` (branch main, a test identity, no analytics)."""
    dest.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=dest)
    git("config", "user.email", "ci@fakeproof.test", cwd=dest)
    git("config", "user.name", "fakeproof ci", cwd=dest)
    dvc("init", "-q", cwd=dest)
    dvc("config", "core.analytics", "false", cwd=dest)
    return dest


def commit_all(repo: Path, message: str) -> str:
    """``git add -A`` and commit; return the new commit's hash."""
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", message, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).stdout.strip()


def make_project(dest: Path, **overrides: dict) -> Path:
    """A git + DVC repo holding this project's pipeline with tiny demo params, committed."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    params = default_params_raw(**TINY)
    for section, values in overrides.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repo(dest)
    commit_all(dest, "pipeline")
    return dest


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a whole repo: work tree, git history, DVC cache and run cache."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def stage_names(repo: Path) -> list[str]:
    """The stages of the repo's dvc.yaml, in file order."""
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def ran_stages(output: str) -> set[str]:
    """The stages a ``dvc repro`` / ``dvc exp run`` log says it ran (not those it skipped or
    restored from the run cache)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def lock_hashes(repo: Path) -> dict[str, str]:
    """``stage:path`` -> md5 of every out recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {f"{stage}:{o['path']}": o["md5"] for stage, s in lock["stages"].items()
            for o in s.get("outs", [])}


def downstream(repo: Path, stage: str) -> set[str]:
    """``stage`` and every stage that depends on its outputs, directly or not (from dvc.lock):
    what a change to ``stage``'s params must re-run, and nothing else."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    outs = {name: {o["path"] for o in s.get("outs", [])} for name, s in lock.items()}
    deps = {name: {d["path"] for d in s.get("deps", [])} for name, s in lock.items()}
    found, grew = {stage}, True
    while grew:
        made = set().union(*(outs[n] for n in found))
        new = {n for n in lock if n not in found and any(
            d == o or d.startswith(o.rstrip("/") + "/") for d in deps[n] for o in made)}
        found |= new
        grew = bool(new)
    return found
