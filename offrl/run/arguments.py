"""argparse types of the command line and the scripts that take options of their own, kept
free of heavy imports so that parsing arguments is fast."""

from __future__ import annotations

import argparse


def is_seed(value: int) -> bool:
    """numpy's and JAX's seed range, [0, 2^32): other seeds fail deep in a run or command."""
    return 0 <= value < 2**32


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def positive_int(text: str) -> int:
    """argparse type of counts: 0 or less is a usage error."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: it must be at least 1")
    return value


def seed_int(text: str) -> int:
    """argparse type of seeds."""
    value = _whole_number(text)
    if not is_seed(value):
        raise argparse.ArgumentTypeError(f"{value}: a seed must be in [0, 2^32)")
    return value


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
