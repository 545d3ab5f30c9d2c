"""Editor speed on a 1,000-node graph: open and paint, pan/zoom frame time, value-edit latency.

Every node shows its values as fields painted on it (numbers, sliders, dropdowns, file pickers).

Each figure is printed next to its target, as a ratio (below 1.0 meets the target).
Runs offscreen (software rendering). Usage: python bench/gui_paint.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from nodeflow.graph import Graph  # noqa: E402


def big_graph(n: int, positions: bool = True) -> Graph:
    """Chains of image nodes side by side (load → crop → invert → blend → resize), laid out on a grid
    (or without positions: the editor lays them out by layers when it opens the file)."""
    graph = Graph()
    kinds = ["image.Load", "image.Crop", "image.Invert", "image.Blend", "image.ResizeBy"]
    per_row = len(kinds)
    for i in range(n):
        row, col = divmod(i, per_row)
        kind = kinds[col]
        node_id = f"n{i}"
        inputs = {"path": "assets/pattern.png"} if kind == "image.Load" else {}
        if kind == "image.Crop":
            inputs = {"x": 0, "y": 0, "width": 64, "height": 64}
        graph.add_node(kind, node_id, inputs)
        if positions:  # rows far enough apart for the picture area of image nodes
            graph.set_layout(node_id, pos=[col * 260.0 + (row // 40) * 1400.0, (row % 40) * 340.0])
        if col:
            prev = f"n{i - 1}"
            if kind == "image.Blend":
                graph.connect(f"{prev}.image", f"{node_id}.a")
                graph.connect(f"n{i - 2}.image", f"{node_id}.b")
            else:
                graph.connect(f"{prev}.image", f"{node_id}.image")
    return graph


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    from PySide6.QtWidgets import QApplication

    from nodeflow.gui.app import create_app
    from nodeflow.gui.window import MainWindow
    from nodeflow.registry import load_registry

    create_app()
    registry = load_registry(use_env=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        graph = big_graph(n)
        links = len(graph.links)
        graph.save(path)
        (Path(tmp) / "assets").mkdir()
        (Path(tmp) / "assets" / "pattern.png").write_bytes(
            (Path(__file__).resolve().parent.parent / "graphs" / "assets" / "pattern.png").read_bytes())
        window = MainWindow(registry, home=Path(tmp) / "home", interactive=False)
        window.resize(1600, 1000)
        window.show()
        QApplication.processEvents()

        # 1. Open the file and paint it (fit to view), first frame on screen.
        t = time.perf_counter()
        window.open_file(path)
        window.view.fit_all()
        window.view.viewport().repaint()
        open_s = time.perf_counter() - t
        QApplication.processEvents()
        assert window.scene is not None and len(window.scene.node_items) == n

        # 2. Pan and zoom frame times: whole graph in view, then at 100 %.
        view = window.view

        def frames(action: object, count: int = 40) -> float:
            times = []
            for i in range(count):
                t0 = time.perf_counter()
                action(i)  # type: ignore[operator]
                view.viewport().repaint()
                times.append(time.perf_counter() - t0)
            return statistics.median(times) * 1000

        view.fit_all()
        fit_zoom = view.zoom
        pan_fit = frames(lambda i: view.pan(12 if i % 2 else -12, 7))
        zoom_fit = frames(lambda i: view.set_zoom(fit_zoom * (1.04 if i % 2 else 1 / 1.04)))
        view.set_zoom(1.0)
        view.centerOn(window.scene.node_items[f"n{n // 2}"])  # the middle of the graph, not a corner
        window.scene.set_item_cache(True)  # what the view does once a zoom settles
        pan_100 = frames(lambda i: view.pan(15 if i % 2 else -15, 9))
        zoom_100 = frames(lambda i: view.set_zoom(1.0 * (1.05 if i % 2 else 1 / 1.05)))
        shown = view.mapToScene(view.viewport().rect()).boundingRect()
        visible = [it for it in window.scene.node_items.values() if shown.intersects(it.sceneBoundingRect())]
        fields = sum(len(it.fields) for it in visible)
        # The same zoom with nothing cached: every visible node and its fields painted each frame.
        from PySide6.QtWidgets import QGraphicsItem

        window.scene.set_item_cache(False)
        for item in window.scene.node_items.values():
            item.setCacheMode(QGraphicsItem.CacheMode.NoCache)
        zoom_uncached = frames(lambda i: view.set_zoom(1.0 * (1.05 if i % 2 else 1 / 1.05)))
        window.scene.set_item_cache(True)

        # 3. Edit a value: command pushed, graph changed, validated, shown on the node.
        doc = window.doc
        assert doc is not None
        assert doc.validate_now(full=True) == [], doc.problems[:3]
        latencies = []
        for i in range(20):
            t0 = time.perf_counter()
            doc.set_input("n1", "width", 32 + i)
            doc.validate_now()
            QApplication.processEvents()
            latencies.append(time.perf_counter() - t0)
        edit_ms = statistics.median(latencies) * 1000
        validate_ms = statistics.median(
            [_timed(lambda: doc.validate_now(full=True)) for _ in range(10)]) * 1000

        # 4. The same graph without positions: laid out on opening, then Fit All.
        bare = Path(tmp) / "bare.json"
        big_graph(n, positions=False).save(bare)
        t = time.perf_counter()
        window.open_file(bare)
        window.view.fit_all()
        window.view.viewport().repaint()
        bare_s = time.perf_counter() - t
        bare_zoom = window.view.zoom
        window.close()

    print(f"graph: {n} nodes, {links} links (offscreen, software painting)")
    print(f"open + first paint        {open_s * 1000:8.1f} ms   target 1000 ms   ratio {open_s / 1.0:.2f}")
    for name, ms in (("pan, whole graph in view", pan_fit), ("zoom, whole graph in view", zoom_fit),
                     ("pan at 100 %", pan_100), ("zoom at 100 %", zoom_100)):
        print(f"{name:<25} {ms:8.1f} ms   target   16 ms   ratio {ms / 16:.2f}")
    print(f"  (at 100 %: {len(visible)} nodes in view with {fields} fields; zoom repainting all of them "
          f"every frame, nothing cached: {zoom_uncached:.1f} ms)")
    print(f"value edit to validated   {edit_ms:8.1f} ms   target   50 ms   ratio {edit_ms / 50:.2f}"
          f"   (whole-graph validation {validate_ms:.1f} ms)")
    print(f"open without positions    {bare_s * 1000:8.1f} ms   target 1000 ms   ratio {bare_s / 1.0:.2f}"
          f"   (laid out by layers; Fit All zoom {bare_zoom:.3f})")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _timed(fn: object) -> float:
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
