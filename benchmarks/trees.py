"""Build the benchmark trees once and keep them under ``benchmarks/.cache/`` (gitignored).

* ``fake_tree(n)``: ``n`` checkpoints that are not checkpoints at all (a few bytes each) with real JSON
  sidecars: enough for the config checks, which must never read weights, and for collection.
* ``real_tree(n)``: ``n`` genuine Lightning checkpoints (``trainer.save_checkpoint`` after a real
  ``fit`` step) of the ~7.9M-parameter ``bench_models.ConvNet``: ~31 MB each. One run folder per three
  checkpoints (``best``, ``last``, ``best-v1``: one config, as a real run's checkpoints share one), four
  distinct architectures across runs. Each file is a distinct file (own inode, own page-cache pages):
  the Lightning-written checkpoints of one architecture are copied, as a training run rewrites them.

Both layouts are ``outputs/<name>_<timestamp>/checkpoints/<kind>.ckpt`` with ``<kind>.config.json``.
A tree is rebuilt only when its recipe changes (``RECIPE`` below) or ``--rebuild`` is given.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
KINDS = ("best", "last", "best-v1")
VARIANTS = 4  # distinct architectures (model sections) across runs
RECIPE = "v3"  # bump when the layout or the model changes


def _run_name(index: int) -> str:
    day, second = divmod(index, 86400)
    hh, rest = divmod(second, 3600)
    mm, ss = divmod(rest, 60)
    stamp = f"2025{1 + day // 28:02d}{1 + day % 28:02d}_{hh:02d}{mm:02d}{ss:02d}"
    return f"run{index:05d}-convnet-v{index % VARIANTS}_{stamp}"  # neighbouring runs: different architectures


def layout(n: int) -> list[tuple[str, int, int]]:
    """(relpath, variant, run) of ``n`` checkpoints: three per run folder."""
    found = []
    for index in range(n):
        run, kind = divmod(index, len(KINDS))
        found.append((f"{_run_name(run)}/checkpoints/{KINDS[kind]}.ckpt", run % VARIANTS, run))
    return found


def _sidecar(ckpt: Path, variant: int, run: int) -> None:
    """The run's config: its model section is the variant's plus the run's own seed (one section per run)."""
    sys.path.insert(0, str(HERE))
    from bench_models import model_section

    model = {**model_section(variant), "init_seed": run}
    config = {"model": model, "optimizer": {"lr": 0.01}, "preprocessing": {"size": 64}}
    ckpt.with_name(ckpt.name.removesuffix(".ckpt") + ".config.json").write_text(json.dumps(config, indent=1))


def _done(root: Path, n: int, kind: str) -> bool:
    stamp = root / ".complete"
    return stamp.exists() and stamp.read_text() == f"{kind} {n} {RECIPE}"


def _fresh(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    (root / "outputs").mkdir(parents=True)
    return root / "outputs"


def fake_tree(n: int, *, rebuild: bool = False) -> Path:
    """``n`` fake checkpoints (a few bytes) with sidecar configs; returns the outputs dir."""
    root = CACHE / f"fake-{n}"
    if _done(root, n, "fake") and not rebuild:
        return root / "outputs"
    outputs = _fresh(root)
    for relpath, variant, run in layout(n):
        path = outputs / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PK\x03\x04 not a real checkpoint: its weights are never read")
        _sidecar(path, variant, run)
    (root / ".complete").write_text(f"fake {n} {RECIPE}")
    return outputs


def _lightning_checkpoints(directory: Path) -> list[Path]:
    """One genuine Lightning checkpoint per architecture variant, written after one real training step."""
    import torch
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, TensorDataset

    sys.path[:0] = [str(HERE), str(HERE.parent)]
    from bench_models import ConvNet, model_section

    from fixtures.demo_training import WrappedModel, fit_and_save

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    data = DataLoader(TensorDataset(torch.randn(2, 3, 64, 64)), batch_size=2)
    for variant in range(VARIANTS):
        cfg = OmegaConf.create({"model": model_section(variant), "optimizer": {"lr": 0.01}})
        path = directory / f"variant{variant}.ckpt"
        fit_and_save(WrappedModel(cfg, ConvNet), data, path, steps=1)
        paths.append(path)
    return paths


def real_tree(n: int, *, rebuild: bool = False) -> Path:
    """``n`` genuine Lightning checkpoints of ~31 MB with sidecar configs; returns the outputs dir."""
    root = CACHE / f"real-{n}"
    if _done(root, n, "real") and not rebuild:
        return root / "outputs"
    sources = CACHE / "lightning-sources"
    stamp = sources / ".complete"
    if not (stamp.exists() and stamp.read_text() == RECIPE):
        shutil.rmtree(sources, ignore_errors=True)
        _lightning_checkpoints(sources)
        stamp.write_text(RECIPE)
    need = n * (sources / "variant0.ckpt").stat().st_size
    free = shutil.disk_usage(CACHE).free
    if need > free * 0.8:
        raise SystemExit(f"real_tree({n}) needs {need / 1e9:.1f} GB of disk, only {free / 1e9:.1f} GB free")
    outputs = _fresh(root)
    for relpath, variant, run in layout(n):
        path = outputs / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / f"variant{variant}.ckpt", path)
        _sidecar(path, variant, run)
    (root / ".complete").write_text(f"real {n} {RECIPE}")
    return outputs


def subset(outputs: Path, relpaths: list[str], name: str) -> Path:
    """A tree holding some of ``outputs``' checkpoints (hard links: same files, same page cache)."""
    root = CACHE / "subsets" / name
    wanted = "\n".join(sorted(relpaths))
    stamp = root / ".complete"
    if stamp.exists() and stamp.read_text() == f"{outputs}\n{wanted}":
        return root / "outputs"
    target = _fresh(root)
    for relpath in relpaths:
        source = outputs / relpath
        dest = target / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, dest)
        config = source.with_name(source.name.removesuffix(".ckpt") + ".config.json")
        os.link(config, dest.with_name(config.name))
    stamp.write_text(f"{outputs}\n{wanted}")
    return target


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("fake", "real"))
    parser.add_argument("n", type=int)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    build = fake_tree if args.kind == "fake" else real_tree
    print(build(args.n, rebuild=args.rebuild))
