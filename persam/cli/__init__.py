"""The ``persam`` command line.

Each sub-command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from persam.allocator import tune_cpu_allocator

# Sub-command modules, in the order ``persam --help`` lists them.
_COMMANDS = ("segment", "everything", "learn", "track", "eval", "export", "weights", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="persam",
        description=(
            "Personalize Segment Anything from one example: segment your object in photos and videos."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"persam.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    tune_cpu_allocator()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # Outputs are written atomically, so nothing half-written is left; re-running resumes.
        print(f"persam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
