"""dvc.yaml is the one place for paths and code deps, and it agrees with the code.

- Each stage's code deps are exactly the fakeproof modules it runs: derived here from the code (the
  import closure of its entry module, plus what ``fakeproof/cli.py`` imports at module level),
  with packages (attacks/, sources/, demo/) as one folder dep. A missing dep would let DVC serve a
  stale result after an edit; a superfluous one re-runs a stage for nothing.
- Every plot series that dvc.yaml names is a column of a file the evaluate/train code writes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from fakeproof.dvcfile import flatten_vars

PROJECT = Path(__file__).resolve().parents[1]
PKG = PROJECT / "fakeproof"
PACKAGES = {"attacks", "sources", "demo", "corruptions", "faces", "models", "objectives"}  # sub-packages depended on as whole folders
ENTRY = {"download": "download", "extract_frames": "frames", "crop_faces": "faces", "split": "splits",
         "pretrain": "train cost", "adv_finetune": "train cost", "evaluate": "evaluate",
         "ensemble": "ensemble"}


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != "fakeproof":
        return None
    base = PROJECT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    mod = ".".join(path.relative_to(PROJECT).with_suffix("").parts)
    if mod.endswith(".__init__"):
        pkg = mod[: -len(".__init__")]
    else:
        pkg = mod.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("fakeproof")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("fakeproof"):
                continue
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if _module_file(f"{base}.{a.name}")}
    return {m for m in out if _module_file(m)}


def closure(start: list[str], top_level_only_first: bool = False) -> set[str]:
    seen: set[str] = set()
    todo = [(m, top_level_only_first) for m in start]
    while todo:
        m, top = todo.pop()
        if m in seen and not top:
            continue
        seen.add(m)
        parts = m.split(".")
        if len(parts) >= 2 and parts[1] in PACKAGES and not top:
            # a folder dep: every module in it may run (sources/ auto-imports its members)
            for f in sorted((PKG / parts[1]).rglob("*.py")):
                sub = ".".join(f.relative_to(PROJECT).with_suffix("").parts).removesuffix(".__init__")
                if sub not in seen:
                    seen.add(sub)
                    todo.extend((d, False) for d in _imports(f, False) if d not in seen)
        for dep in _imports(_module_file(m), top):
            if dep not in seen:
                todo.append((dep, False))
    return seen


def code_deps(stage: str) -> set[str]:
    mods = closure(["fakeproof.cli"], top_level_only_first=True) - {"fakeproof.cli"}
    mods |= closure([f"fakeproof.{m}" for m in ENTRY[stage].split()])
    deps = {"fakeproof/cli.py", f"stages/{stage}.py"}
    for m in mods:
        parts = m.split(".")
        if m == "fakeproof":
            continue
        if len(parts) >= 2 and parts[1] in PACKAGES:
            deps.add(f"fakeproof/{parts[1]}")
        else:
            deps.add(str(_module_file(m).relative_to(PROJECT)))
    if stage == "download":
        deps.add("fakeproof/assets")  # the demo's photos and the official split files
    return deps


def _dvc() -> dict:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text())


def _expand(text: str, vars_: dict) -> str:
    for k, v in vars_.items():
        text = text.replace("${" + k + "}", str(v))
    return text


def _vars() -> dict:
    """dvc.yaml's vars, flattened the way DVC interpolates them (``${path.store}``)."""
    return flatten_vars(_dvc())


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_code_deps_are_the_import_closure(stage: str) -> None:
    spec = _dvc()["stages"][stage]
    declared = {_expand(d, _vars()) for d in spec["deps"]}
    declared_code = {d for d in declared if d.startswith(("fakeproof", "stages/"))}
    want = code_deps(stage)
    assert want - declared_code == set(), f"dvc.yaml stage {stage} lacks code deps"
    assert declared_code - want == set(), f"dvc.yaml stage {stage} lists code it never runs"


TRAIN_STAGES = ("pretrain", "adv_finetune", "evaluate", "ensemble")


def _files_under(root: Path) -> set[str]:
    return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()}


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory) -> Path:
    """The training and evaluation stages run by their dvc.yaml command lines (vars expanded) on a
    tiny store, in a folder of their own: what they write is what the test inspects."""
    import yaml as _yaml

    from _params import default_params_raw
    from _tinydata import build_store
    from fakeproof.cli import main

    root = tmp_path_factory.mktemp("stages")
    build_store(root / "data", {"train": 8, "val": 4, "test": 4}, frames=3, size=16)
    (root / "data" / "faces.lmdb").rename(root / "data" / "faces.lmdb")
    raw = default_params_raw(
        train={"epochs": 1, "batch_size": 8, "threads": 1},
        adv={"epochs": 1, "steps": 1, "select_steps": 2, "select_videos": 4},
        eval={"eps": [0, "4/255", "16/255"], "headline_eps": "4/255",
              "attacks": ["fgsm", "pgd", "apgd", "square"],
              "pgd_steps": 2, "apgd_steps": 2, "square_queries": 5, "bootstrap": 20, "gallery": 2})
    (root / "params.yaml").write_text(_yaml.safe_dump(raw))
    before = _files_under(root)
    v = _vars()
    import os

    cwd = os.getcwd()
    os.chdir(root)
    try:
        for stage in TRAIN_STAGES:
            argv = _expand(_dvc()["stages"][stage]["cmd"], v).split()
            assert argv[:2] == ["python", f"stages/{stage}.py"]
            assert main([stage, *argv[2:]]) == 0, stage
    finally:
        os.chdir(cwd)
    (root / "written.txt").write_text("\n".join(sorted(_files_under(root) - before)))
    return root


def _declared_outs(stage: str) -> set[str]:
    spec = _dvc()["stages"][stage]
    outs = []
    for key in ("outs", "metrics", "plots"):
        for o in spec.get(key, []):
            outs.append(o if isinstance(o, str) else next(iter(o)))
    return {_expand(o, _vars()) for o in outs}


def test_every_written_file_is_declared_and_every_declared_out_is_written(staged_run: Path) -> None:
    written = set((staged_run / "written.txt").read_text().split())
    scratch = {f for f in written if f.startswith("runs/")}  # TensorBoard: not an out
    declared = set().union(*(_declared_outs(s) for s in TRAIN_STAGES))
    undeclared = {f for f in written - scratch
                  if not any(f == d or f.startswith(d + "/") for d in declared)}
    assert undeclared == set()
    for d in declared:
        assert any(f == d or f.startswith(d + "/") for f in written), f"{d} declared, not written"


def test_every_plot_series_is_a_column_of_its_file(staged_run: Path) -> None:
    import pandas as pd

    n = 0
    for plot in _dvc()["plots"]:
        if isinstance(plot, str):
            assert (staged_run / plot).is_file(), plot
            continue
        (_, spec), = plot.items()
        for path, cols in spec["y"].items():
            cols = [cols] if isinstance(cols, str) else cols
            table = pd.read_csv(staged_run / path)
            for c in [*cols, spec["x"]]:
                assert c in table.columns, f"{path}: no column {c}"
                n += 1
    assert n > 10


def test_every_out_reaches_its_stage_on_the_command_line() -> None:
    """dvc.yaml names each path once (under vars: when several stages share it); the stage gets
    it on its command line, so the code keeps no path constants."""
    import fakeproof.cli as cli

    for name in ENTRY:
        cmd = _expand(_dvc()["stages"][name]["cmd"], _vars())
        for out in _declared_outs(name):
            assert f" {out}" in cmd, f"{name}: out {out} is not passed on its command line"
    # the one exception: `fakeproof detect`'s documented default checkpoint (detect is no stage)
    source = Path(cli.__file__).read_text().replace('"models/robust.pt"', "")
    for path in ("data/", "models/", "metrics/"):
        assert f'"{path}' not in source, f"fakeproof/cli.py keeps a path constant under {path}"


def fix_dvc_yaml() -> None:
    """Rewrite each stage's code deps in dvc.yaml to its import closure (data deps untouched):
    ``python tests/test_dvc_yaml.py`` after adding an import."""
    lines = (PROJECT / "dvc.yaml").read_text().splitlines()
    out, stage, in_deps = [], None, False
    for line in lines:
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip()[:-1]
        if line.strip() == "deps:" and stage in ENTRY:
            in_deps = True
            out.append(line)
            out.extend(f"      - {d}" for d in sorted(code_deps(stage)))
            continue
        if in_deps and line.startswith("      - "):
            dep = line.strip()[2:]
            if dep.startswith(("fakeproof", "stages/")):
                continue
            out.append(line)
            continue
        in_deps = False
        out.append(line)
    (PROJECT / "dvc.yaml").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    fix_dvc_yaml()


def test_the_readme_shows_the_real_dag() -> None:
    """README's mermaid graph is `dvc dag --md` of this dvc.yaml (reads dvc.yaml only)."""
    import shutil
    import subprocess
    import sys

    dvc = (shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
           or pytest.skip("dvc is not installed"))
    run = subprocess.run([dvc, "dag", "--md"], cwd=PROJECT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() in (PROJECT / "README.md").read_text(), \
        "README's dvc dag is stale: paste `dvc dag --md` into it"


def test_the_default_checkpoint_is_the_robust_stage_out() -> None:
    """``fakeproof detect`` and the web page default to the checkpoint adv_finetune writes."""
    from fakeproof.config import DEFAULT_CHECKPOINT

    assert _vars()["path.robust"] == DEFAULT_CHECKPOINT


def test_a_data_folders_layout_is_dvc_yamls() -> None:
    """``DataPaths.under`` (eval.cross: another pipeline's data folder) names the files dvc.yaml
    writes."""
    from fakeproof.data import DataPaths

    v = _vars()
    want = DataPaths(Path(v["path.store"]), Path(v["path.faces"]), Path(v["path.splits"]))
    assert DataPaths.under(Path(v["path.store"]).parent) == want
