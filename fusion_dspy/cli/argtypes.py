"""Argument types the subcommands share: bad input fails in argparse with a message naming the option."""

from __future__ import annotations

import argparse

__all__ = ["int_range", "ints", "modes", "positive_int", "temperature_choices"]

MODES = ("fuse", "select", "auto")


def positive_int(text: str) -> int:
    """An integer >= 1 (counts and limits: ``--limit 0`` or ``-1`` would silently drop examples)."""
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def ints(text: str) -> list[int]:
    """Comma-separated integers >= 1, e.g. ``1,2,4,8``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4,8, got {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1 like 1,2,4,8, got {text!r}")
    return values


def int_range(text: str) -> tuple[int, int]:
    """An inclusive range ``LOW,HIGH`` with 1 <= LOW <= HIGH, e.g. ``1,8``."""
    values = ints(text) if text.strip() else []
    if len(values) != 2 or values[0] > values[1]:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with 1 <= LOW <= HIGH, e.g. 1,8; got {text!r}")
    return values[0], values[1]


def temperature_choices(text: str) -> tuple[float, ...] | None:
    """``keep`` (``None``: each teacher keeps its own temperature) or comma-separated numbers, e.g. ``0.3,0.7,1.0``."""
    if text.strip() == "keep":
        return None
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected 'keep' or comma-separated numbers like 0.3,0.7,1.0, got {text!r}") from error
    if not values:
        raise argparse.ArgumentTypeError(f"expected 'keep' or comma-separated numbers like 0.3,0.7,1.0, got {text!r}")
    return values


def modes(text: str) -> tuple[str, ...]:
    """Comma-separated Fuse modes, e.g. ``fuse,select``."""
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values or any(value not in MODES for value in values):
        raise argparse.ArgumentTypeError(f"expected modes from {', '.join(MODES)}, comma-separated, got {text!r}")
    return values
