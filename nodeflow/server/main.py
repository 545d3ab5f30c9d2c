"""``nodeflow serve``: start the job server with uvicorn and say where it is and what it keeps."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nodeflow.errors import UsageError

DEFAULT_PORT = 8188
"""ComfyUI's port, so its clients find nodeflow where they look by default."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``nodeflow serve`` (the CLI registers the subcommand and calls `cmd_serve`)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; any other "
                             "address requires a token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="where the queue, history, inputs and outputs are kept (default: a "
                             "per-user data folder)")
    parser.add_argument("--token", default=None,
                        help="access token every request must carry (default: none on loopback; "
                             "generated and printed for any other address; NODEFLOW_TOKEN also sets it)")
    parser.add_argument("--cors", metavar="ORIGIN", action="append", default=[],
                        help="allow web pages from this origin to call the API (repeatable; default: none)")
    parser.add_argument("--devices", metavar="LIST", default=None,
                        help="compute devices, one worker each, e.g. cuda:0,cuda:1 (default: the GPUs "
                             "found, else cpu)")
    parser.add_argument("--vram-budget", metavar="SIZE", default=None,
                        help="bytes of models each device may hold, e.g. 6GB (default: its free memory "
                             "less 1 GB; needed for simulated sim:N devices)")
    parser.add_argument("--ram-budget", metavar="SIZE", default=None,
                        help="bytes of models each worker may keep in RAM before it lets the least "
                             "recently used go (default: no limit)")
    parser.add_argument("--keep-outputs", metavar="POLICY", default=None,
                        help="which finished jobs (history, events, files) to keep: an age (30d, 12h), "
                             "a number of jobs (5000), a size of files (20GB), several joined by "
                             "commas, or 'all' (default: 90d,10000)")
    parser.add_argument("--keep-check", type=float, default=None, metavar="SECONDS",
                        help="how often the server forgets what --keep-outputs does not keep, besides "
                             "at start (default: 600)")
    parser.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="on Ctrl-C, how long the running job may take to finish before it is "
                             "put back in the queue (default: 30)")
    parser.add_argument("--max-request-mb", type=float, default=8.0, metavar="MB",
                        help="largest graph or prompt request (default: 8)")
    parser.add_argument("--max-upload-mb", type=float, default=32.0, metavar="MB",
                        help="largest uploaded picture (default: 32)")
    parser.add_argument("--max-input-mb", type=float, default=10240.0, metavar="MB",
                        help="most the uploaded pictures in the input folder may hold together; "
                             "further uploads are refused until some are deleted (default: 10240)")
    from nodeflow.cluster.serve import add_arguments as add_ray_arguments

    add_ray_arguments(parser)  # --ray, --ray-workers


def _uvicorn_server_class(dispatcher: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, except that after Ctrl-C or SIGTERM has drained the server the process exits
        normally instead of being killed by the signal again, and a second Ctrl-C stops the
        running job at once (it goes back to the queue)."""

        def on_signal(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                dispatcher.hurry()
            self.handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.on_signal) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("nodeflow", appauthor=False)) / "server"


def cmd_serve(args: argparse.Namespace, registry: Any) -> int:
    """Run the server until Ctrl-C or SIGTERM (which drain it); returns the exit code."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UsageError(f"nodeflow serve needs the server extra ({exc})",
                         hint="Install it with: pip install 'nodeflow[server]'") from None

    from nodeflow.comfy.model_paths import add_comfy_models
    from nodeflow.server.app import ServerConfig, create_app
    from nodeflow.server.safety import Limits
    from nodeflow.settings import Settings

    token = args.token or os.environ.get("NODEFLOW_TOKEN") or None
    generated = False
    if token is None and not is_loopback(args.host):
        token = secrets.token_urlsafe(24)
        generated = True
    if args.port < 0 or args.port > 65535:
        raise UsageError(f"--port {args.port} is not a port number (0-65535)")
    data_dir = Path(args.data).expanduser() if args.data else default_data_dir()
    models = [Path(m).expanduser() for m in args.models]
    env = os.environ.get("NODEFLOW_MODELS")
    if env:
        models += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    for flag in ("max_request_mb", "max_upload_mb", "max_input_mb"):
        if not getattr(args, flag) > 0:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag):g}: give a number of "
                             "megabytes above 0")
    limits = Limits(max_request_bytes=int(args.max_request_mb * 1024 * 1024),
                    max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                    max_input_bytes=int(args.max_input_mb * 1024 * 1024))
    folders = add_comfy_models(Settings(), getattr(args, "comfy_models", [])).folders
    from nodeflow.devices import parse_size
    from nodeflow.server.retention import DEFAULT_INTERVAL, DEFAULT_POLICY, parse_retention

    keep = parse_retention(args.keep_outputs or DEFAULT_POLICY)
    keep_interval = args.keep_check if args.keep_check is not None else DEFAULT_INTERVAL
    if keep_interval <= 0:
        raise UsageError(f"--keep-check {args.keep_check:g}: give a number of seconds above 0")
    config = ServerConfig(keep=keep, keep_interval=keep_interval, data_dir=data_dir, registry=registry, models_dirs=models,
                          model_folders=folders, token=token,
                          cors=list(args.cors), limits=limits, drain_timeout=args.drain_timeout,
                          devices=args.devices.split(",") if args.devices else None,
                          vram_budget=parse_size(args.vram_budget) if args.vram_budget else None,
                          ram_budget=parse_size(args.ram_budget) if args.ram_budget else None)
    if args.ray:  # the jobs run in Ray actors instead of local threads
        from nodeflow.cluster.serve import ray_server_workers

        config.workers = list(ray_server_workers(args, config))
    app = create_app(config)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"nodeflow server: http://{shown}:{args.port}  (API docs: /docs; ComfyUI clients: "
          f"ws://{shown}:{args.port}/ws)", flush=True)
    print(f"data: {data_dir}  (queue and history in jobs.sqlite3, pictures in input/ and output/; "
          f"{keep.describe()})", flush=True)
    if token is not None:
        source = "generated; pass --token to choose it" if generated else "as given"
        print(f"token: {token}  ({source}; send it as 'Authorization: Bearer TOKEN' or ?token=)",
              flush=True)
    else:
        print("listening on this machine only, without a token", flush=True)
    logging.basicConfig(level=logging.INFO, format="nodeflow: %(message)s", stream=sys.stderr)
    server = _uvicorn_server_class(app.state.server.dispatcher)(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                           ws_max_size=config.limits.max_request_bytes,
                                           timeout_graceful_shutdown=5))
    server.run()
    print("nodeflow server stopped", flush=True)
    return 0
