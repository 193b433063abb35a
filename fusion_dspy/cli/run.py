"""``fusion-dspy run``: one fused call with a teacher pool from a config file, and its report."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fusion_dspy.cli.argtypes import positive_int

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="pool config file (.toml, .yaml or .json)")
    parser.add_argument("--signature", default="question -> answer", help="DSPy signature of the task")
    parser.add_argument(
        "--input", action="append", default=[], metavar="FIELD=VALUE", help="an input field value (repeatable)"
    )
    parser.add_argument("--n", type=positive_int, default=None, help="number of candidates (default: one per teacher)")
    parser.add_argument("--mode", choices=("fuse", "select", "auto"), default="fuse")
    parser.add_argument("--selector", default="mbr", help="selector for select mode and the fallback")
    parser.add_argument("--fusor", default=None, help="fusor name from the config (default: the first one)")
    parser.add_argument("--pool", default=None, help="a named pool from the config's [pools] (default: every teacher)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the teachers")
    parser.add_argument("--json", action="store_true", help="print the prediction and report as JSON")


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """``--input FIELD=VALUE`` pairs as a mapping; a field given twice is an error (neither value would be right)."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field.strip():
            raise ValueError(f"--input expects FIELD=VALUE, got {pair!r}.")
        if field.strip() in inputs:
            raise ValueError(f"--input {field.strip()} is given twice; give each input field once.")
        inputs[field.strip()] = value
    return inputs


def run(args: argparse.Namespace) -> int:
    from fusion_dspy import Fuse
    from fusion_dspy.pool_config import load_pool_config
    from fusion_dspy.pool_config import pick_fusor

    inputs = parse_inputs(args.input)  # a malformed --input fails before any LM is built
    config = load_pool_config(args.config)
    teachers = config.build_teachers(args.pool)
    fusors = config.build_fusors()
    fusor_name = pick_fusor(fusors, args.fusor, source=args.config)
    # Without a configured fusor the first teacher's LM fuses (better than failing on a small pool).
    fusor = fusors[fusor_name] if fusor_name else teachers[0].lm
    n = args.n if args.n is not None else sum(t.samples for t in teachers)
    fuse = Fuse(
        args.signature, n, teachers=teachers, fusor=fusor, mode=args.mode, selector=args.selector,
        timeout=args.timeout,
    )
    prediction = fuse(**inputs)
    report = prediction.fusion
    outputs = {name: prediction[name] for name in prediction.keys()}
    if args.json:
        print(json.dumps({"outputs": outputs, "report": report.model_dump(mode="json")}, default=str, indent=2))
        return 0
    print(_format(outputs, report))
    return 0


def _format(outputs: dict[str, Any], report: Any) -> str:
    lines = ["Candidates:"]
    for record in report.candidates:
        head = f"  #{record.index} {record.teacher} (T={record.temperature}, {record.latency_s:.1f}s)"
        if record.ok:
            body = "; ".join(f"{k}={_short(v)}" for k, v in record.outputs.items())
            lines.append(f"{head}: {body}")
        else:
            lines.append(f"{head}: FAILED {record.error_type}: {_short(record.error)}")
    if report.fusor is not None and report.fusor.comparison:
        lines += ["", "Fusor comparison:", f"  {_short(report.fusor.comparison, 600)}"]
    lines += ["", f"Answer ({report.path}):"]
    lines += [f"  {name}: {value}" for name, value in outputs.items()]
    lines += ["", report.summary()]
    return "\n".join(lines)


def _short(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
