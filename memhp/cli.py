"""``memhp``: the umbrella command (``memhp blocks``, ``memhp report``)."""

from __future__ import annotations

import argparse
import sys

from memhp.exporter.blocks_cli import add_blocks_parser
from memhp.program import ArgumentParser, add_common_flags, configure_logging, guarded


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="memhp", description="memhp: memory hot(un)plug tools.")
    add_common_flags(parser, "memhp")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_blocks_parser(sub)
    try:  # `memhp report` needs the optional `report` extra (matplotlib); the container image has none
        from memhp.report.cli import add_report_parser
    except ImportError:
        pass
    else:
        add_report_parser(sub)
    for command in sub.choices.values():
        add_common_flags(command, "memhp", suppress=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    return guarded("memhp", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = get_parser().parse_args(argv)
    configure_logging(args)
    return guarded(f"memhp {args.command}", lambda: int(args.func(args)))


if __name__ == "__main__":
    sys.exit(main())
