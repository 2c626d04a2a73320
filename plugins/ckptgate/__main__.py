"""``python -m ckptgate merge shard1.json shard2.json ... [--json all.json] [--markdown all.md]``

Merges the JSON reports of ``--ckpt-shard K/N`` runs into one report with the same totals as an unsharded
run, and renders its Markdown. Exit code 0 when every checked checkpoint is usable (or expected unusable),
1 when some checkpoint is unusable, 2 for unreadable or inconsistent reports: the gate's own meaning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ckptgate import markdown, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ckptgate", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="merge shard JSON reports into one")
    merge.add_argument("reports", nargs="+", type=Path, help="JSON reports written with --ckpt-json")
    merge.add_argument("--json", type=Path, help="write the merged JSON report here")
    merge.add_argument("--markdown", type=Path, help="write the merged Markdown report here")
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
