"""Messages show where they happen (a bubble at the socket or node), leave when the problem is
fixed, and stay listed in the Messages panel."""

from __future__ import annotations

from nodeflow.graph import Graph

from .conftest import DEMO
from .test_editing import _two_nodes
from .util import drag, socket_point


def test_refused_link_message_at_the_socket_until_a_link_is_made(qtbot, window):
    load, invert, integer = _two_nodes(qtbot, window)
    drag(window, socket_point(window, integer, "out", "value"), socket_point(window, invert, "in", "image"))
    assert "link" in window.notices.bubbles
    bubble = window.notices.bubbles["link"]
    assert bubble.isVisible() and "IMAGE" in bubble.notice.text and "INT" in bubble.notice.text
    # It points at the socket the link was dropped on.
    assert (bubble.pos() - window.scene.node_items[invert].socket_pos("in", "image")).manhattanLength() < 1
    assert window.notices.list.count() == 1 and "Link refused" in window.notices.list.item(0).text()
    # Making a good link resolves it: the bubble goes, the list keeps it, marked done.
    drag(window, socket_point(window, load, "out", "image"), socket_point(window, invert, "in", "image"))
    assert "link" not in window.notices.bubbles
    assert bubble.scene() is None
    assert window.notices.active() == []
    assert window.notices.list.item(0).text().startswith("✓")
    assert window.status_label.text() == ""


def test_cannot_run_shows_at_the_node_and_clears_when_fixed(qtbot, make_window):
    w = make_window(DEMO)
    link = next(ln for ln in w.doc.graph.links if ln.dst == "save")
    w.scene.select_nodes([])
    from nodeflow.gui import commands as cmd

    w.doc.push(cmd.DisconnectSocket(w.doc.graph, link.target))
    w.doc.validate_now()
    assert not w.run()
    bubble = w.notices.bubbles["cannot-run"]
    assert "Cannot run" in bubble.notice.text and bubble.notice.node == "save"
    assert w.scene.node_items["save"].sceneBoundingRect().adjusted(-5, -30, 5, 0).contains(bubble.pos())
    w.doc.undo.undo()
    w.doc.validate_now()
    qtbot.waitUntil(lambda: "cannot-run" not in w.notices.bubbles, timeout=3000)
    assert w.notices.active() == []
    assert "Messages" in w._messages_dock.windowTitle()


def test_run_failure_shows_on_the_node_and_clears_when_the_node_is_changed(qtbot, make_window, tmp_path):
    graph = Graph()
    graph.add_node("guitest.Fail", "fragile", {"fail": True})
    path = tmp_path / "fail.json"
    graph.save(path)
    w = make_window(path)
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000):
        assert w.run()
    bubble = w.notices.bubbles["failed:fragile"]
    assert "asked to fail" in bubble.notice.text
    assert w._messages_dock.windowTitle() == "Messages (1)"
    w.doc.set_input("fragile", "fail", False)
    assert "failed:fragile" not in w.notices.bubbles and w.notices.active() == []
    with qtbot.waitSignal(w.runner.runFinished, timeout=20000) as blocker:
        assert w.run()
    assert blocker.args[0].ok
    assert w.notices.active() == [] and w._messages_dock.windowTitle() == "Messages"
