"""Split thousands of checkpoints over a CI matrix: shard K of N, by a stable hash of the checkpoint path.

The same path lands in the same shard on every machine and every run (no Python hash randomisation, no
dependence on how many other files exist), and each shard can still use ``-n auto`` inside.
"""

from __future__ import annotations

import hashlib
import re

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse(spec: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; shards are numbered from 1, as CI matrices usually are."""
    match = _SPEC.match(spec)
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--ckpt-shard {spec!r}: expected K/N with 1 <= K <= N, e.g. 1/4")
    return int(match.group(1)), int(match.group(2))


def shard_of(relpath: str, count: int) -> int:
    """The shard (1..count) a checkpoint path belongs to."""
    digest = hashlib.sha256(relpath.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1
