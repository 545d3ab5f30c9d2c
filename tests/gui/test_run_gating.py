"""The editor runs what is asked even when an unrelated node has a problem."""

from __future__ import annotations


def test_a_stray_node_with_a_problem_does_not_block_a_run(qtbot, demo_window):
    w = demo_window
    stray = w.scene.add_node("image.Resize", w.view.mapToScene(40, 40))  # its image is not linked
    w.doc.validate_now()
    assert stray in w.doc.problems_by_node  # still shown on the node
    with qtbot.waitSignal(w.runner.runFinished, timeout=20_000) as finished:
        assert w.run()
    result = finished.args[0]
    assert result is not None and result.ok and result.files
    assert [p.location.node for p in result.warnings] == [stray]
    assert stray in w.doc.problems_by_node


def test_a_problem_in_what_the_run_needs_still_blocks_it(qtbot, demo_window):
    w = demo_window
    w.doc.graph.disconnect("save.image")
    assert not w.run()
    assert "Cannot run: 1 problem" in w.status_label.text()
