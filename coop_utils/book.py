"""Executes the chapters with papermill for a profile and builds the Jupyter Book (placeholder)."""

from __future__ import annotations

import argparse

from coop_utils.config import PROFILES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="smoke", choices=PROFILES)


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("the book runner arrives with the chapters")
