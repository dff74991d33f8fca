"""The ``resetguard`` command line.

Each tool lives in its own package and contributes a sub-command through a small module
exposing ``add_parser(subparsers)`` and ``run(args) -> int``; it is imported only when
its sub-command is used, so ``resetguard --help`` stays fast.

Exit codes shared by every sub-command: 0 success, 1 problems found / failures,
2 bad usage (message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

__all__ = ["UsageError", "main"]

# sub-command -> module with add_parser()/run(); imported lazily.
_COMMANDS: dict[str, str] = {
    "demo": "resetguard.demo._cli",
    "doctor": "resetguard.doctor._cli",
    "proxy": "resetguard.proxy._cli",
}


class UsageError(Exception):
    """Bad command-line input: printed as ``resetguard: error: …`` with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage + message and exits 2; keep that, but never a traceback.
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _build_parser() -> tuple[_Parser, dict[str, ModuleType], dict[str, argparse.ArgumentParser]]:
    parser = _Parser(
        prog="resetguard",
        description="Survive, explain and reproduce connection resets.",
    )
    from resetguard import __version__

    parser.add_argument("--version", action="version", version=f"resetguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules: dict[str, ModuleType] = {}
    wanted = _wanted_command(sys.argv[1:])
    for name, modname in _COMMANDS.items():
        if wanted is not None and name != wanted:
            sub.add_parser(name, help=f"see 'resetguard {name} --help'")
            continue
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("resetguard"):
                continue  # tool not shipped in this build
            raise
        modules[name] = module
        module.add_parser(sub)
    return parser, modules, dict(sub.choices)


def _wanted_command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in _COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Example::

        $ resetguard proxy --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "resetguard", *args_list]
    try:
        parser, modules, parsers = _build_parser()
        args, extra = parser.parse_known_args(args_list)
        if extra:
            # argparse leaves a sub-command's unknown options to the top-level parser, whose
            # usage line says nothing about them: let the sub-command's own parser complain.
            owner = parsers.get(args.command) if args.command else None
            (owner or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    finally:
        sys.argv = saved
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    module = modules[args.command]
    try:
        code: int = module.run(args)
    except UsageError as exc:
        sys.stderr.write(f"resetguard {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    # Under `python -m resetguard.cli` this file runs as __main__, a second copy of the
    # module: call the real one so sub-commands' UsageError is the class main() catches.
    from resetguard.cli import main as _main

    raise SystemExit(_main())
