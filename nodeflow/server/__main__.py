"""``python -m nodeflow.server``: the same as ``nodeflow serve``."""

from __future__ import annotations

import argparse
import sys

from nodeflow.server.main import add_arguments, cmd_serve


def main(argv: list[str] | None = None) -> int:
    from nodeflow.errors import NodeflowError
    from nodeflow.registry import load_registry

    parser = argparse.ArgumentParser(prog="nodeflow serve", description="Run the nodeflow job server.")
    parser.add_argument("--plugins", metavar="DIR", action="append", default=[])
    parser.add_argument("--models", metavar="DIR", action="append", default=[])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_serve(args, load_registry(args.plugins))
    except NodeflowError as exc:
        print(f"nodeflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
