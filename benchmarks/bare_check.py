"""The floor of a full check: only the work that cannot be avoided, no pytest, no ckptgate.

For each checkpoint: read its sidecar config, ``torch.load(weights_only=True, mmap=True)`` with the
OmegaConf containers a Lightning checkpoint's ``hyper_parameters`` need allowed, check that every floating
tensor of the state_dict is finite (a sum per tensor, as cheap as it gets), build the model, strict
``load_state_dict`` (Lightning's ``model.`` prefix stripped), one forward pass under ``inference_mode``.

``--reuse`` builds a model only when the config differs from the previous checkpoint's (a run's
checkpoints share one; one model is kept, as ckptgate keeps one); without it the model is built per
checkpoint, as the issue words it. The last line also gives the resident size after the imports and the
peak (KiB): what checking one checkpoint at a time costs in memory.

``--threads N`` sets torch's thread count; ``--halves`` runs two of these at once with one thread each on
halves of the tree (``--part 0/2``, ``--part 1/2``): the parallel floor.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

started = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--reuse", action="store_true", help="one model per distinct config")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--part", default="0/1", help="K/N: check every N-th run folder, starting at K")
    parser.add_argument("--halves", action="store_true", help="run two of these at once, one thread each")
    args = parser.parse_args()
    if args.halves:  # the parallel floor: two processes, one thread each, on halves of the tree
        import subprocess
        import sys

        base = [sys.executable, __file__, str(args.outputs), "--threads", "1", *(["--reuse"] if args.reuse else [])]
        workers = [subprocess.Popen([*base, "--part", f"{k}/2"]) for k in range(2)]
        codes = [worker.wait() for worker in workers]
        if any(codes):
            raise SystemExit(f"a half failed: exit codes {codes}")
        print(f"both halves checked in {time.perf_counter() - started:.2f} s")
        return

    import collections
    import typing

    import torch
    from bench_models import build
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode

    if args.threads:
        torch.set_num_threads(args.threads)
    import resource

    before = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() // 1024
    safe = [typing.Any, list, dict, int, collections.defaultdict, DictConfig, ListConfig, ContainerMetadata]
    safe += [Metadata, AnyNode]
    part, parts = (int(x) for x in args.part.split("/"))
    runs = sorted({path.parent for path in args.outputs.rglob("*.ckpt")})
    mine = [ckpt for run in runs[part::parts] for ckpt in sorted(run.glob("*.ckpt"))]
    models: dict[str, torch.nn.Module] = {}
    for ckpt in mine:
        config = json.loads(ckpt.with_name(ckpt.name.removesuffix(".ckpt") + ".config.json").read_text())
        key = json.dumps(config["model"], sort_keys=True)
        with torch.serialization.safe_globals(safe):
            checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        model = models.get(key) if args.reuse else None
        if model is None:
            models.clear()  # one model at a time
            model = build(OmegaConf.create(config["model"]))
            if args.reuse:
                models[key] = model
        floats = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
        assert all(torch.isfinite(v.sum()) for v in floats)  # every tensor, EMA copies included
        weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        model.load_state_dict(weights, strict=True)
        model.eval()
        with torch.inference_mode():
            output = model(torch.randn(1, 3, 64, 64))
        assert all(torch.isfinite(t).all() for t in output.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"checked {len(mine)} checkpoints in {time.perf_counter() - started:.2f} s; RSS KiB {before} -> {peak}")


if __name__ == "__main__":
    main()
