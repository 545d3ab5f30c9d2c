"""The ``nodeflow`` command: run, validate and inspect graphs headless.

Exit codes: 0 success, 1 a node failed, 2 invalid graph or usage, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM), 129 hung up (SIGHUP), 141 the output's reader went away.
Heavy libraries (torch and friends) are imported only by the nodes that need them.
"""

from __future__ import annotations

import os

# Before anything can import huggingface_hub: never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# nodeflow reports progress itself; the libraries' loading bars would interleave with it.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, TextIO  # noqa: E402

from nodeflow import __version__  # noqa: E402
from nodeflow.errors import GraphInvalid, Location, NodeflowError, Problem, UsageError, printable, with_hint  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for `cmd | head`


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugins", metavar="DIR", action="append", default=[],
                        help="also load node packs from this folder (repeatable; "
                             "NODEFLOW_PLUGINS adds more)")
    common.add_argument("--allow-dir", metavar="DIR", action="append", default=[],
                        help="let a graph taken from a PNG also read files in this folder "
                             "(repeatable; by default it reads only beside the PNG and in the "
                             "models folders)")
    common.add_argument("--models", metavar="DIR", action="append", default=[],
                        help="models folder with checkpoints/, loras/, controlnet/, vae/, upscale/ "
                             "and the subfolders plugins declare (repeatable; NODEFLOW_MODELS adds "
                             "more; `nodeflow plugins` lists the model kinds)")
    common.add_argument("--comfy-models", metavar="DIR", action="append", default=[],
                        help="a ComfyUI folder, its models/ folder or an extra_model_paths.yaml: "
                             "find models where ComfyUI does (repeatable)")

    parser = argparse.ArgumentParser(
        prog="nodeflow", description="nodeflow: node-graph pipelines for image generation.")
    parser.add_argument("--version", action="version", version=f"nodeflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run a graph file (or a PNG made by nodeflow)",
                         description="Run a graph file headless and write its outputs.")
    run.add_argument("file", help="graph .json file, or a PNG written by image.Save")
    run.add_argument("--set", metavar="NODE.INPUT=VALUE", action="append", default=[],
                     help="override a literal input (repeatable)")
    run.add_argument("--output", metavar="NODE", action="append", default=None,
                     help="run only what this node needs (repeatable; default: all output nodes)")
    run.add_argument("--out", metavar="DIR", default="out", help="output folder (default: out)")
    run.add_argument("--json", action="store_true", help="print events and the result as JSON lines")
    run.add_argument("--quiet", "-q", action="store_true", help="print only the files written")
    run.add_argument("--devices", metavar="LIST", default=None,
                     help="compute devices, e.g. cuda:0,cuda:1 (default: the GPUs found, else cpu)")
    run.add_argument("--vram-budget", metavar="SIZE", default=None,
                     help="model memory allowed per device, e.g. 6GB (default: free memory minus 1 GiB)")
    run.add_argument("--ram-budget", metavar="SIZE", default=None,
                     help="model memory allowed in RAM before idle models are dropped, e.g. 12GB")
    run.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                     help="compute precision (default: fp16 on CUDA, fp32 on CPU; VAEs stay fp32)")
    run.add_argument("--memory-report", action="store_true",
                     help="after the run, print per node the device, resident models, peak bytes "
                          "and the plan-time estimate")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="run up to N independent nodes at once (default: up to 4, by CPU count; "
                          "1 = strictly one after another)")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="CPU threads each torch computation uses (default: NODEFLOW_THREADS, "
                          "else OMP_NUM_THREADS, else every core)")

    from nodeflow.sweeps.options import add_arguments as add_sweep_arguments

    add_sweep_arguments(run)  # --sweep, --zip, --ray, --ray-workers

    val = sub.add_parser("validate", parents=[common], help="check graph files without running them",
                         description="Report every problem in the graph files; exit 2 if any.")
    val.add_argument("files", nargs="+", metavar="FILE")
    val.add_argument("--json", action="store_true", help="print problems as JSON")

    nodes = sub.add_parser("nodes", parents=[common], help="list the node types",
                           description="List node types; --json gives each one's full schema.")
    nodes.add_argument("filter", nargs="?", default="", help="only ids containing this text")
    nodes.add_argument("--json", action="store_true", help="print the full schemas as JSON")

    sub.add_parser("schema", help="print the JSON Schema of graph files")

    imp = sub.add_parser("import", parents=[common], help="convert a ComfyUI workflow to a graph file",
                         description="Convert a ComfyUI workflow (UI or API format, or a PNG saved by "
                                     "ComfyUI) to a nodeflow graph file.")
    imp.add_argument("file", help="ComfyUI workflow .json, API prompt .json, or PNG saved by ComfyUI")
    imp.add_argument("-o", "--output", metavar="GRAPH.json", default=None,
                     help="where to write the graph (default: NAME.nodeflow.json)")
    imp.add_argument("--partial", action="store_true",
                     help="convert what can be converted; mark unsupported nodes instead of failing")

    plugins = sub.add_parser("plugins", parents=[common], help="list the node packs and their status")
    plugins.add_argument("--json", action="store_true")

    edit = sub.add_parser("edit", parents=[common], help="open a graph in the desktop editor",
                          description="Open the graph editor (PySide6), with FILE or the demo graph.")
    edit.add_argument("file", nargs="?", help="graph .json file, or a PNG written by image.Save")
    edit.add_argument("--screenshot", metavar="OUT.png",
                      help="render the window (graph fitted to the view) to a PNG offscreen and exit")
    edit.add_argument("--out", metavar="DIR", default=None, help="output folder for runs (default: out)")

    plugin = sub.add_parser("plugin", help="write plugins: scaffold a package, print the API reference")
    plugin_sub = plugin.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    new = plugin_sub.add_parser("new", help="create a working plugin package NAME")
    new.add_argument("name", help="pack name: lower-case, becomes the node id prefix")
    new.add_argument("--dir", default=".", help="parent folder (default: current folder)")
    plugin_sub.add_parser("docs", help="print the plugin API reference (Markdown)")

    from nodeflow.server.main import add_arguments as add_serve_arguments

    serve = sub.add_parser("serve", parents=[common], help="run the job server (HTTP, websocket, ComfyUI API)",
                           description="Serve a persistent job queue over HTTP; see docs/server.md.")
    add_serve_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from nodeflow.shutdown import install_exit_handlers, interrupted_exit_code

    install_exit_handlers()  # SIGTERM and SIGHUP clean up like Ctrl-C
    _print_warnings_plainly()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_INVALID
    try:
        handler = {"run": cmd_run, "validate": cmd_validate, "nodes": cmd_nodes,
                   "schema": cmd_schema, "plugins": cmd_plugins, "edit": cmd_edit,
                   "plugin": cmd_plugin, "import": cmd_import, "serve": cmd_serve}[args.command]
        return handler(args)
    except GraphInvalid as exc:
        _print_problems(exc.problems, getattr(args, "json", False), sys.stdout, sys.stderr)
        return EXIT_INVALID
    except NodeflowError as exc:
        print(f"nodeflow: error: {printable(str(exc), keep=chr(10))}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt as exc:
        print("nodeflow: interrupted", file=sys.stderr)
        return interrupted_exit_code(exc)
    except BrokenPipeError:
        # The reader went away (`nodeflow nodes --json | head`): stop quietly, as a program
        # killed by SIGPIPE does, and keep the interpreter's last flush from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _print_warnings_plainly() -> None:
    """nodeflow's own warnings as ``nodeflow: warning: ...`` lines, without source lines."""
    import warnings

    from nodeflow.errors import NodeflowWarning

    default = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, NodeflowWarning):
            print(f"nodeflow: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


# --- shared ------------------------------------------------------------------------

def _registry(args: argparse.Namespace, *, report: bool = True) -> Any:
    from nodeflow.registry import load_registry

    registry = load_registry(args.plugins)
    if report:
        for pack in registry.problems():
            print(f"nodeflow: warning: node pack '{pack.name}' ({pack.source}) {pack.status}: "
                  f"{pack.error}", file=sys.stderr)
    return registry


def _print_problems(problems: list[Problem], as_json: bool, out: TextIO, err: TextIO,
                    warnings: list[Problem] | None = None) -> None:
    if as_json:
        print(json.dumps({"valid": False, "problems": [p.to_json() for p in problems],
                          "warnings": [w.to_json() for w in warnings or ()]}, indent=2),
              file=out)
        return
    for p in problems:
        print(f"error: {printable(str(p))}", file=err)
    count = len(problems)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=err)


def load_graph_file(path: str, registry: Any, settings: Any = None) -> Any:
    """Load a graph (JSON or PNG, nodeflow's or a ComfyUI workflow, converted, its model files
    looked up in ``settings``' folders) and bring old node versions up to date; raise on problems."""
    from nodeflow.comfy import load_graph_any
    from nodeflow.graph import check_graph_path

    check_graph_path(path)  # a FIFO or a device is refused before anything opens it
    try:
        return load_graph_any(path, registry, settings)
    except ValueError as exc:  # content no reader classified, e.g. a 5000-digit number
        from nodeflow.errors import GraphFileError
        from nodeflow.graph import json_value_error

        raise GraphFileError(f"malformed JSON: {json_value_error(exc)}",
                             location=Location(file=path)) from None


# --- commands ----------------------------------------------------------------------

def add_comfy_models(settings: Any, places: list[str]) -> None:
    from nodeflow.comfy.model_paths import add_comfy_models as add

    add(settings, places)


def console_reporter(stream: Any, *, quiet: bool = False) -> Any:
    """The run's display on a console: live lines on a terminal that can redraw, plain lines else."""
    from nodeflow.progress import ConsoleReporter, can_redraw

    if not quiet and can_redraw(stream):
        from nodeflow.live_progress import LiveReporter  # rich costs its import only here

        return LiveReporter(stream)
    return ConsoleReporter(stream, quiet=quiet)


def print_assumptions(graph: Any, path: str, err: Any = None) -> None:
    """What the ComfyUI import assumed for a workflow (as ``nodeflow import`` prints it)."""
    comfy = graph.meta.get("comfyui") if isinstance(graph.meta, dict) else None
    for assumption in (comfy or {}).get("assumptions", []) if isinstance(comfy, dict) else []:
        print(f"note: {printable(path)}: assumed {printable(str(assumption))}", file=err or sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    from nodeflow.comfy.command import run_import

    return run_import(args.file, args.output, args.partial, _registry(args))


def cmd_validate(args: argparse.Namespace) -> int:
    from nodeflow.errors import GraphFileError
    from nodeflow.graph import check_graph_path
    from nodeflow.settings import Settings
    from nodeflow.validate import GraphValidator

    registry = _registry(args, report=not args.json)
    all_problems: list[Problem] = []
    all_warnings: list[Problem] = []
    summaries = []
    for path in args.files:
        try:
            check_graph_path(path)
            # ComfyUI workflows find their model files in these folders while they are converted
            settings = Settings.from_env(args.models, base_dir=Path(path).resolve().parent)
            _check_input_rules(settings, path, args.allow_dir)
            add_comfy_models(settings, args.comfy_models)
            graph = load_graph_file(path, registry, settings)
        except GraphInvalid as exc:
            all_problems += exc.problems
            continue
        except GraphFileError as exc:
            all_problems.append(Problem("file", with_hint(exc.message, exc.hint), exc.location))
            continue
        if not args.json:
            print_assumptions(graph, path)
        validator = GraphValidator(registry, settings)
        problems = validator.validate(graph)
        all_problems += problems
        all_warnings += validator.warnings  # deprecated or experimental node types
        if not problems:
            summaries.append(f"{path}: valid ({len(graph.nodes)} nodes, {len(graph.links)} links)")
    if not args.json:
        for w in all_warnings:
            print(f"warning: {printable(str(w))}", file=sys.stderr)
    if all_problems:
        _print_problems(all_problems, args.json, sys.stdout, sys.stderr, all_warnings)
        return EXIT_INVALID
    if args.json:
        print(json.dumps({"valid": True, "problems": [],
                          "warnings": [w.to_json() for w in all_warnings]}))
    else:
        print("\n".join(summaries))
    return EXIT_OK


def _check_input_rules(settings: Any, graph_file: str, allow_dirs: list[str]) -> None:
    """Refuse implausible models folders; restrict a graph from a PNG to its allowed folders."""
    from nodeflow.models import check_models_dirs
    from nodeflow.trust import restrict_for_source

    check_models_dirs(settings.models_dirs)
    restrict_for_source(settings, Path(graph_file), allow_dirs)


def cmd_nodes(args: argparse.Namespace) -> int:
    from nodeflow.node import node_flag

    registry = _registry(args, report=not args.json)
    types = [t for t in registry.types() if args.filter.lower() in t.id.lower()]
    if args.json:
        print(json.dumps([t.to_json() for t in types], indent=2, default=str))
        return EXIT_OK
    width = max((len(t.id) for t in types), default=10)
    for t in types:
        summary = t.description.splitlines()[0] if t.description else ""
        flag = node_flag(t)
        if flag is not None:
            summary = f"[{flag[0]}{': ' + flag[1] if flag[1] else ''}] {summary}"
        print(f"{t.id:<{width}}  {t.version:<7}  {summary}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from nodeflow.schema import graph_json_schema

    print(json.dumps(graph_json_schema(), indent=2))
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args, report=False)
    if args.json:
        print(json.dumps([p.to_json() for p in registry.packs], indent=2))
        return EXIT_OK
    for p in registry.packs:
        line = f"{p.name:<16} {p.version or '-':<9} {p.status:<12} {len(p.nodes):>3} nodes  {p.source}"
        print(line)
        if p.error:
            print(f"{'':<16} error: {p.error}")
    from nodeflow.settings import model_kinds

    print("model kinds (subfolders of a models folder):")
    for kind in model_kinds():
        print(f"  {kind.name:<18} {', '.join(f + '/' for f in kind.folders):<34} {kind.description}")
    return EXIT_OK


def cmd_edit(args: argparse.Namespace) -> int:
    if args.file:
        from nodeflow.graph import check_graph_path

        check_graph_path(args.file)  # a FIFO or a device is refused before the window opens
    try:
        from nodeflow.gui import app  # Qt is imported only by this command
    except ImportError as exc:
        raise UsageError(f"the editor needs PySide6 ({exc})",
                         hint="Install it with: pip install 'nodeflow[gui]'") from None
    if args.comfy_models:  # the editor's settings read ComfyUI folders from the environment
        from nodeflow.comfy.model_paths import comfy_model_folders

        for place in args.comfy_models:
            comfy_model_folders(place)  # a wrong folder is a usage error now, not in the editor
        os.environ["NODEFLOW_COMFY_MODELS"] = os.pathsep.join(
            [*filter(None, [os.environ.get("NODEFLOW_COMFY_MODELS")]), *args.comfy_models])
    return app.launch(args.file, screenshot=args.screenshot, plugins=args.plugins, models=args.models,
                      out=args.out)


def print_memory_report(models: Any, result: Any, out: TextIO) -> None:
    """Per node: the device, the peak bytes accounted beside the plan-time estimate, the models."""
    from nodeflow.models import memory_report

    print(memory_report(models, result.ran, result.notes), file=out, end="")


def cmd_serve(args: argparse.Namespace) -> int:
    from nodeflow.server.main import cmd_serve as serve

    return serve(args, _registry(args))


def cmd_plugin(args: argparse.Namespace) -> int:
    if args.plugin_command == "docs":
        from nodeflow.apidoc import api_reference

        print(api_reference(), end="")
        return EXIT_OK
    from nodeflow.scaffold import scaffold_plugin

    folder = scaffold_plugin(args.name, Path(args.dir))
    print(f"created {folder}")
    print(f"next: pip install -e {folder}[test] && pytest {folder}/tests && nodeflow nodes {args.name}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from nodeflow.events import CancelToken
    from nodeflow.executor import Executor, graph_loading
    from nodeflow.progress import JsonReporter
    from nodeflow.settings import Settings

    registry = _registry(args, report=not args.json)
    from nodeflow.graph import check_graph_path

    check_graph_path(args.file)
    # Before the graph is read: a ComfyUI workflow finds its model files in these folders
    settings = Settings.from_env(args.models, args.out, base_dir=Path(args.file).resolve().parent)
    _check_input_rules(settings, args.file, args.allow_dir)
    add_comfy_models(settings, args.comfy_models)
    with graph_loading():
        graph = load_graph_file(args.file, registry, settings)
    if not args.json:
        print_assumptions(graph, args.file)
    if Path(args.file).suffix.lower() == ".png":
        graph.source = Path(args.file)
    from nodeflow.overrides import apply_overrides

    apply_overrides(graph, registry, args.set)
    from nodeflow.validate import flag_warnings

    for warning in flag_warnings(graph, registry):  # deprecated or experimental node types
        print(f"warning: {printable(str(warning))}", file=sys.stderr)
    from nodeflow.sweeps.options import wanted as sweep_wanted

    if sweep_wanted(args):  # many jobs, on this machine or a Ray cluster
        from nodeflow.sweeps.command import run_sweep_command

        return run_sweep_command(args, registry, graph, settings)
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    from nodeflow.devices import check_device_names, parse_size
    from nodeflow.models import ModelManager

    if args.devices:
        check_device_names(args.devices.split(","))  # a missing GPU is a usage error, now

    models = ModelManager(
        args.devices.split(",") if args.devices else None,
        vram_budget=parse_size(args.vram_budget) if args.vram_budget else None,
        ram_budget=parse_size(args.ram_budget) if args.ram_budget else None,
        dtype=args.dtype)
    executor = Executor(registry, settings, workers=args.workers, models=models,
                        threads=args.threads)
    if args.output:
        for node_id in args.output:
            if node_id not in graph.nodes:
                raise UsageError(f"--output names node '{node_id}', which is not in the graph",
                                 location=Location(graph.file_name))
    else:
        from nodeflow.validate import nothing_requested

        nothing_requested(graph, registry)
    # Live lines on a terminal, a line per event when piped or logged (see nodeflow.progress).
    reporter: Any = JsonReporter(sys.stdout) if args.json else console_reporter(
        sys.stderr, quiet=args.quiet)
    cancel = CancelToken()
    from nodeflow.shutdown import cancel_on_signals

    # Ctrl-C, SIGTERM and SIGHUP cancel the run; a second one stops at once.
    try:
        with cancel_on_signals(cancel.cancel, reporter.message) as stopped:
            # -q shows nothing while running: no events to make or pass.
            result = executor.run(graph, args.output, on_event=None if args.quiet and not args.json
                                  else reporter, cancel=cancel)
    finally:
        reporter.close()  # a live display never outlives the run, even on an error
    reporter.finish(result)
    if args.memory_report:
        print_memory_report(models, result, sys.stdout if not args.json else sys.stderr)
    if result.cancelled:
        return stopped.exit_code
    return EXIT_FAILED if result.failed else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
