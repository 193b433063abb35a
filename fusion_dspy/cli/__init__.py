"""The ``fusion-dspy`` command line.

Each subcommand lives in its own module under ``fusion_dspy.cli`` and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``fusion-dspy --help`` stays fast. The CLI is the one place that wires the
core to ``fusion_dspy.programs`` and ``fusion_dspy.optimizers``.

Errors: a verb that fails prints one line, ``error: <what went wrong>``, naming the file or
option to fix, and exits non-zero (2 for bad input or a bad config, 1 for a run that failed, 130 on
Ctrl-C). ``--debug`` (or ``-vv``) shows the traceback instead. Every line is passed through
:func:`fusion_dspy.credentials.redact`, so a credential read from the environment is never printed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "fusion_dspy.cli.demo",
        "offline demo on the bundled local models: single vs Best-of-N vs Fusion",
    ),
    "run": ("fusion_dspy.cli.run", "one fused call with a teacher pool from a config file"),
    "optimize": ("fusion_dspy.cli.optimize", "tune Fuse configurations with Optuna"),
    "dashboard": ("fusion_dspy.cli.dashboard", "open optuna-dashboard on a study's storage"),
    "eval": ("fusion_dspy.cli.eval", "compare single / Best-of-N / Fusion / oracle on a task"),
    "synth": ("fusion_dspy.cli.synth", "generate a fused synthetic dataset, resumable"),
}


def _available() -> dict[str, tuple[str, str]]:
    return {name: spec for name, spec in SUBCOMMANDS.items() if importlib.util.find_spec(spec[0]) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion-dspy", description="Fusion-of-N for DSPy.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--debug", action="store_true", default=False, help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available().items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
        sub.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fusion-dspy`` script."""

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Two-stage parsing: find the subcommand first, then let its module declare its own arguments.
    # "--help" is held back from the first stage, so "fusion-dspy <command> --help" lists the
    # command's own arguments instead of only the top-level ones.
    first_stage = [arg for arg in argv if arg not in ("-h", "--help")] if len(argv) > 1 else argv
    known, _ = parser.parse_known_args(first_stage)
    if known.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(known._module)
    subparsers_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    module.add_arguments(subparsers_action.choices[known.command])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_RedactingFormatter(handler.formatter))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or args.verbose >= 2:
            raise
        code, message = describe_error(exc, args)
        print(f"error: {message}", file=sys.stderr)
        return code


class _RedactingFormatter(logging.Formatter):
    """Formats like the handler's own formatter, then blanks out credentials (log lines quote errors)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        from fusion_dspy.credentials import redact

        return redact(self.inner.format(record))


def describe_error(error: BaseException, args: argparse.Namespace) -> tuple[int, str]:
    """The exit code and the one line a verb prints for ``error`` (credentials redacted)."""
    from fusion_dspy.credentials import redact
    from fusion_dspy.errors import FusionError
    from fusion_dspy.text_safety import one_line

    text = str(error) or type(error).__name__
    if isinstance(error, FusionError):
        # A run that failed (every teacher failed, the selector failed...): the message lists the
        # causes; point at the file that configures the LMs.
        config = getattr(args, "config", None)
        code, text = 1, text + (f" (LMs from --config {config})" if config else "")
    elif isinstance(error, (ValueError, TypeError, LookupError, OSError)):
        code = 2  # bad input: an option, a config file, a data file
        if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
            text = f"{error.filename}: {text}"
    else:
        code, text = 1, f"{type(error).__name__}: {text} (run with --debug for the traceback)"
    # Redact first: flattening whitespace or cutting the line could split a secret so it no longer matches.
    return code, one_line(redact(text))


if __name__ == "__main__":
    raise SystemExit(main())
