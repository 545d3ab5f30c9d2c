"""``nodeflow run --sweep ... [--zip] [--ray ADDRESS]``: the command-line side of sweeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nodeflow.errors import UsageError
from nodeflow.events import CancelToken
from nodeflow.graph import Graph
from nodeflow.settings import Settings
from nodeflow.sweeps.progress import SweepConsoleReporter, SweepJsonReporter
from nodeflow.sweeps.spec import parse_sweeps

EXIT_OK, EXIT_FAILED = 0, 1


def run_sweep_command(args: argparse.Namespace, registry: Any, graph: Graph,
                      settings: Settings) -> int:
    """Run the sweep (locally or on Ray) with a progress display; return the exit code.

    ``settings`` are those ``nodeflow run`` made for the graph (models folders, the output
    folder, the folders an untrusted graph may read).
    """
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UsageError("--ray-workers must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.devices and not args.ray:  # on Ray, the devices are the workers' own
        from nodeflow.devices import check_device_names

        check_device_names(args.devices.split(","))
    if not args.output:
        from nodeflow.validate import nothing_requested

        nothing_requested(graph, registry)
    jobs = parse_sweeps(graph, registry, args.sweep, zipped=args.zip)
    reporter: Any = SweepJsonReporter(sys.stdout) if args.json else SweepConsoleReporter(
        sys.stderr, quiet=args.quiet)
    cancel = CancelToken()
    from nodeflow.shutdown import cancel_on_signals

    # Ctrl-C, SIGTERM and SIGHUP cancel the running jobs; finished ones are kept.
    with cancel_on_signals(cancel.cancel, reporter.message) as stopped:
        if args.ray:
            from nodeflow.cluster.driver import ClusterOptions, run_on_ray

            # Workers run in other folders (and on other machines): paths must be absolute.
            options = ClusterOptions(
                address=args.ray, workers=args.ray_workers,
                plugins=[str(Path(p).expanduser().resolve()) for p in args.plugins],
                models=[str(p.resolve()) for p in settings.models_dirs], devices=args.devices,
                folders={kind: [str(d.resolve()) for d in dirs]
                         for kind, dirs in settings.folders.items()},
                allowed_dirs=None if settings.allowed_dirs is None else
                [str(d.resolve()) for d in settings.allowed_dirs],
                vram_budget=args.vram_budget, ram_budget=args.ram_budget, dtype=args.dtype,
                node_workers=args.workers, threads=getattr(args, "threads", None))
            result = run_on_ray(options, registry, graph, jobs, settings, outputs=args.output,
                                on_event=reporter, cancel=cancel)
        else:
            from nodeflow.sweeps.runner import run_local

            executor = local_executor(args, registry, settings)
            try:
                result = run_local(executor, graph, jobs, settings.out_dir, outputs=args.output,
                                   on_event=reporter, cancel=cancel)
            finally:
                executor.close()
    if result.cancelled:
        reporter.message("finished jobs are kept: run the same command again to resume")
    reporter.finish(result)
    if result.cancelled:
        return stopped.exit_code
    return EXIT_OK if result.ok else EXIT_FAILED


def local_executor(args: argparse.Namespace, registry: Any, settings: Settings) -> Any:
    """One executor (with its model manager) for every job of a local sweep."""
    from nodeflow.devices import parse_size
    from nodeflow.executor import Executor
    from nodeflow.models import ModelManager

    models = ModelManager(
        args.devices.split(",") if args.devices else None,
        vram_budget=parse_size(args.vram_budget) if args.vram_budget else None,
        ram_budget=parse_size(args.ram_budget) if args.ram_budget else None,
        dtype=args.dtype)
    extra: dict[str, Any] = {}
    if getattr(args, "threads", None) is not None:
        extra["threads"] = args.threads
    return Executor(registry, settings, workers=args.workers, models=models, **extra)
