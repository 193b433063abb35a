"""``fusion-dspy dashboard``: browse a study in optuna-dashboard (trials, Pareto front, importances).

Example::

    fusion-dspy dashboard --storage sqlite:///study.db --port 8080
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", required=True,
                        help="the study's storage: sqlite:///study.db, postgresql://..., or a journal file path")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")


def run(args: argparse.Namespace) -> int:
    from fusion_dspy.credentials import redact

    try:
        import optuna_dashboard
    except ImportError:
        print(
            "optuna-dashboard is not installed. Install it with:\n"
            "    pip install optuna-dashboard\n"
            f"then run this command again, or run: optuna-dashboard {redact(args.storage)}",
            file=sys.stderr,
        )
        return 1
    from fusion_dspy.optimizers.storage import open_storage

    storage = open_storage(args.storage).storage
    print(f"optuna-dashboard on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0
