"""What every memhp command shares: ``--version``, ``--log.level``, ``--log.format``,
one-line errors and exit statuses.

* :class:`ArgumentParser` reports a usage error in one line
  (``memhp-exporter: error: ... (see --help)``) with exit status 2;
* :func:`add_common_flags` adds the three flags of every command;
* :func:`guarded` runs a command's body so that no traceback reaches the
  user: :class:`UsageError` is one line and status 2, anything unexpected one
  line and status 1 (the traceback only with ``--log.level=debug``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from .buildinfo import version_text
from .logsetup import FORMATS, LEVELS, parse_level, setup_logging
from .units import parse_duration

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("memhp")


class UsageError(Exception):
    """Bad flags, or a file a flag names that is missing or unusable: exit status 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with kingpin's one-line errors (Prometheus' programs)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _argument_type(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """``parse`` for argparse: its own message in the error, not "invalid parse_duration value"."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name
    return convert


# type= of every interval and timeout flag: "90s", "10m", "1h30m" or plain seconds
duration = _argument_type(parse_duration, "duration")
_level = _argument_type(parse_level, "log level")


class VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None, program=""):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)
        self.program = program

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(self.program))
        parser.exit()


def add_common_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, program: str, *, suppress: bool = False
) -> None:
    """``--version``, ``--log.level``, ``--log.format``.  With ``suppress`` (a subcommand's copy of the
    flags), a default does not overwrite the value given before the subcommand's name."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    if not suppress:
        parser.add_argument(
            "--version", action=VersionAction, program=program, help="print version, revision and Python version"
        )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        type=_level,
        default=d("info"),
        metavar="{" + ",".join(LEVELS) + "}",
        help="only log messages of this severity or above (default " + ("info" if suppress else "%(default)s") + ")",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=FORMATS,
        default=d("logfmt"),
        help="log line format; times are RFC 3339, UTC (default " + ("logfmt" if suppress else "%(default)s") + ")",
    )


def configure_logging(args: argparse.Namespace) -> None:
    setup_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", "logfmt"))


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return str(e) or type(e).__name__


def guarded(program: str, body: Callable[[], int]) -> int:
    """Run ``body``; every error leaves as one line on stderr and an exit status, never a traceback."""
    try:
        return body()
    except UsageError as e:
        print(f"{program}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `memhp blocks | head`
        try:
            sys.stderr.close()
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:
        log.debug("%s failed", program, exc_info=True)
        print(f"{program}: error: {type(e).__name__}: {_describe(e)}", file=sys.stderr)
        return EXIT_FAILED
