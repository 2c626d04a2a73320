"""``python -m ckptgate merge shard1.json shard2.json ... [--json all.json] [--markdown all.md]``
``python -m ckptgate merge-pins pins-1.json pins-2.json ... --out pins.json``

Merges the JSON reports of ``--ckpt-shard K/N`` runs into one report with the same totals as an unsharded
run, and renders its Markdown. Exit code 0 when every checked checkpoint is usable (or expected unusable),
1 when some checkpoint is unusable, 2 for unreadable or inconsistent reports: the gate's own meaning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ckptgate import markdown, pins, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckptgate", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="merge shard JSON reports into one")
    merge.add_argument("reports", nargs="+", type=Path, help="JSON reports written with --ckpt-json")
    merge.add_argument("--json", type=Path, help="write the merged JSON report here")
    merge.add_argument("--markdown", type=Path, help="write the merged Markdown report here")
    merge_pins = commands.add_parser("merge-pins", help="merge the pins files of shards into one")
    merge_pins.add_argument("files", nargs="+", type=Path, help="pins files written with --ckpt-pins-update")
    merge_pins.add_argument("--out", type=Path, required=True, help="write the merged pins file here")
    args = parser.parse_args(argv)
    if args.command == "merge-pins":
        return _merge_pins(args.files, args.out)
    try:
        merged = results.merge([results.load(path) for path in args.reports])
    except results.ReportError as exc:
        print(f"ckptgate merge: {exc}", file=sys.stderr)
        return 2
    if args.json:
        results.write(merged, args.json)
    if args.markdown:
        results.write_text(args.markdown, markdown.render(merged))
    totals = merged["totals"]
    shards = ", ".join(merged["shards"]) or "unsharded"
    print(
        f"{totals['scanned']} checkpoint(s) from {len(args.reports)} report(s) ({shards}): {totals['usable']} usable, "
        f"{totals['unusable']} unusable ({totals['expected_unusable']} expected), {totals['unchecked']} unchecked"
    )
    return 1 if totals["unusable"] > totals["expected_unusable"] else 0


def _merge_pins(files: list[Path], out: Path) -> int:
    """Each shard pinned its own checkpoints into its own file; one file holds them all."""
    try:
        merged = pins.merge(pins.load(path) if path.exists() else _missing(path) for path in files)
    except pins.PinsError as exc:
        print(f"ckptgate merge-pins: {exc}", file=sys.stderr)
        return 2
    results.write(pins.document(merged), out)
    print(f"{len(merged)} pinned checkpoint(s) from {len(files)} file(s) written to {out}")
    return 0


def _missing(path: Path) -> dict[str, pins.Pin]:
    raise pins.PinsError(f"{path}: no such file")


if __name__ == "__main__":
    raise SystemExit(main())
