"""The ``nodeflow run`` options for sweeps and Ray (argparse only: cheap to import)."""

from __future__ import annotations

import argparse

from nodeflow.errors import UsageError


def add_arguments(run: argparse.ArgumentParser) -> None:
    """Register ``--sweep``, ``--zip``, ``--ray`` and ``--ray-workers`` on ``nodeflow run``."""
    run.add_argument("--sweep", metavar="NODE.INPUT=VALUES", action="append", default=[],
                     help="run once per value: A..B[..STEP], @FILE (one value a line), V1,V2 or a "
                          "JSON list; several make a grid (repeatable). Outputs are named by job, "
                          "listed in OUT/sweep.jsonl; a re-run skips the jobs already complete")
    run.add_argument("--zip", action="store_true",
                     help="pair the --sweep lists position by position instead of a grid")
    run.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                     help="run the jobs on a Ray cluster (auto: RAY_ADDRESS or a cluster on this "
                          "machine, else start one here); needs pip install 'nodeflow[ray]'")
    run.add_argument("--ray-workers", metavar="N", type=int, default=None,
                     help="Ray workers to start (default: one per GPU, else one per machine)")


def wanted(args: argparse.Namespace) -> bool:
    """Does this ``nodeflow run`` go through the sweep runner (`nodeflow.sweeps.command`)?"""
    if args.zip and not args.sweep:
        raise UsageError("--zip needs at least one --sweep")
    if args.ray_workers is not None and not args.ray:
        raise UsageError("--ray-workers needs --ray")
    return bool(args.sweep or args.ray)
