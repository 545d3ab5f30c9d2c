"""Start the editor: ``nodeflow edit [FILE]`` or the ``nodeflow-gui`` script."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def editor_home() -> Path:
    """Where recent files and autosaves live (NODEFLOW_EDITOR_HOME overrides it)."""
    env = os.environ.get("NODEFLOW_EDITOR_HOME")
    if env:
        return Path(env).expanduser()
    from PySide6.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericDataLocation)
    return Path(base or Path.home() / ".local" / "share") / "nodeflow" / "editor"


def dark_palette(app: object) -> None:
    from PySide6.QtGui import QColor, QPalette

    p = QPalette()
    for role, color in ((QPalette.ColorRole.Window, "#2b2d31"), (QPalette.ColorRole.WindowText, "#e6e6e6"),
                        (QPalette.ColorRole.Base, "#1e1f22"), (QPalette.ColorRole.AlternateBase, "#26282c"),
                        (QPalette.ColorRole.Text, "#e6e6e6"), (QPalette.ColorRole.Button, "#34363b"),
                        (QPalette.ColorRole.ButtonText, "#e6e6e6"), (QPalette.ColorRole.Highlight, "#3f6fa8"),
                        (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.ToolTipBase, "#26282c"),
                        (QPalette.ColorRole.ToolTipText, "#e6e6e6"), (QPalette.ColorRole.PlaceholderText, "#80868b")):
        p.setColor(role, QColor(color))
    app.setPalette(p)  # type: ignore[attr-defined]


_QUIET = ("This plugin does not support",)
"""Qt messages of the offscreen platform that say nothing to a user."""


def _qt_messages(mode: object, context: object, message: str) -> None:
    if not message.startswith(_QUIET):
        print(f"qt: {message}", file=sys.stderr)


def _report_exception(kind: type[BaseException], value: BaseException, tb: object) -> None:
    """An editor bug is printed and shown in the status bar; the editor keeps running."""
    import traceback

    traceback.print_exception(value)
    from PySide6.QtWidgets import QApplication

    for widget in QApplication.topLevelWidgets():
        status = getattr(widget, "status", None)
        if callable(status):
            status(f"Internal error: {kind.__name__}: {value}", error=True)


def create_app(argv: Sequence[str] = ()) -> object:
    from PySide6.QtCore import qInstallMessageHandler
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "nodeflow", *argv])
        app.setApplicationName("nodeflow")
        app.setOrganizationName("nodeflow")
        app.setStyle("Fusion")
        dark_palette(app)
        qInstallMessageHandler(_qt_messages)
        sys.excepthook = _report_exception
    return app


def launch(file: str | None = None, *, screenshot: str | None = None, plugins: Sequence[str] = (),
           models: Sequence[str] = (), out: str | None = None) -> int:
    """Open the editor (blocking until it is closed), or render a screenshot and return."""
    if screenshot and not os.environ.get("QT_QPA_PLATFORM") and not os.environ.get("DISPLAY") \
            and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from .startup import check_xcb

    hint, certain = check_xcb()
    if hint is not None:
        print(f"nodeflow: {'error' if certain else 'warning'}: {hint}", file=sys.stderr)
        if certain:  # Qt would abort with only "could not load the Qt platform plugin"
            return 1
    app = create_app()
    from nodeflow.registry import load_registry

    from .window import MainWindow, demo_graph_path

    registry = load_registry(plugins)
    for pack in registry.problems():
        print(f"nodeflow: warning: node pack '{pack.name}' ({pack.source}) {pack.status}: {pack.error}",
              file=sys.stderr)
    window = MainWindow(registry, models=[Path(m) for m in models], out_dir=Path(out) if out else None,
                        home=editor_home(), interactive=screenshot is None)
    if file:
        if not window.open_file(Path(file)):
            print(f"nodeflow: error: {window.status_label.text()}", file=sys.stderr)
            if screenshot:
                return 2
    else:
        demo = demo_graph_path()
        if demo is not None:
            window.open_file(demo, as_untitled=True)
    if screenshot:
        return save_screenshot(window, Path(screenshot))
    window.show()
    window.offer_recovery()
    from nodeflow.shutdown import install_qt_handlers

    install_qt_handlers(app)  # Ctrl-C, SIGTERM, SIGHUP: cancel runs, exit 130/143/129
    return int(app.exec())  # type: ignore[attr-defined]


def save_screenshot(window: object, path: Path) -> int:
    """Render the window with the graph fitted to the view, save it as PNG."""
    from PySide6.QtWidgets import QApplication

    from .window import MainWindow

    assert isinstance(window, MainWindow)
    window.resize(1500, 900)
    window.show()
    for _ in range(3):
        QApplication.processEvents()
    assert window.view is not None and window.scene is not None
    window.view.fit_all()
    if window.scene.node_items:
        window.scene.select_nodes([next(iter(window.scene.node_items))])
    QApplication.processEvents()
    window.view.minimap.update()
    QApplication.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    ok = window.grab().save(str(path))
    window.interactive = False
    window.close()
    if not ok:
        print(f"nodeflow: error: could not write {path}", file=sys.stderr)
        return 2
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodeflow-gui", description="The nodeflow graph editor.")
    parser.add_argument("file", nargs="?", help="graph .json file, or a PNG written by image.Save")
    parser.add_argument("--screenshot", metavar="OUT.png", help="render the window to a PNG and exit")
    parser.add_argument("--plugins", metavar="DIR", action="append", default=[],
                        help="also load node packs from this folder (repeatable)")
    parser.add_argument("--models", metavar="DIR", action="append", default=[],
                        help="models folder (repeatable; NODEFLOW_MODELS adds more)")
    parser.add_argument("--out", metavar="DIR", default=None, help="output folder (default: out)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return launch(args.file, screenshot=args.screenshot, plugins=args.plugins, models=args.models, out=args.out)


if __name__ == "__main__":
    raise SystemExit(main())
