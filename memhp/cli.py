"""``memhp``: the umbrella command (``memhp blocks``, ``memhp report``)."""

from __future__ import annotations

import argparse
import sys

from memhp.exporter.blocks_cli import add_blocks_parser


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memhp", description="memhp: memory hot(un)plug tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_blocks_parser(sub)
    try:  # `memhp report` needs the optional `report` extra (matplotlib); the container image has none
        from memhp.report.cli import add_report_parser
    except ImportError:
        pass
    else:
        add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # `memhp blocks | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
