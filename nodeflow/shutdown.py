"""Termination signals handled like Ctrl-C: cancel the work, clean up, exit with a known code.

``SIGINT`` (Ctrl-C), ``SIGTERM`` (``kill``, a service manager stopping nodeflow) and ``SIGHUP``
(the terminal closed) all cancel a run the same way: the running node stops at its next step,
no output file is left half-written (temporary files are removed), and the process exits with
128 + the signal number, as shells report it: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.
A second signal stops at once (still removing temporary files).

The command line, the editor and a server use the same helpers: `cancel_on_signals` around a
run, `install_exit_handlers` for the rest of the process, `install_qt_handlers` for a Qt
event loop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
"""The signals that cancel work (SIGHUP does not exist on Windows)."""


def exit_code(signum: int) -> int:
    """The exit status for a run stopped by ``signum``: 128 + its number (130 for Ctrl-C)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP (a KeyboardInterrupt, so every
    ``finally`` and ``except KeyboardInterrupt`` cleanup runs as for Ctrl-C)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def interrupted_exit_code(exc: BaseException) -> int:
    """The exit status for a KeyboardInterrupt: the signal's if it came from one, else 130."""
    return exc.exit_code if isinstance(exc, Interrupted) else exit_code(signal.SIGINT)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


def install_exit_handlers() -> None:
    """Make SIGTERM and SIGHUP raise `Interrupted` in the main thread, as Ctrl-C raises
    KeyboardInterrupt, instead of killing the process before it cleans up. Only in the main
    thread (Python delivers signals there); elsewhere it does nothing."""
    if not _in_main_thread():
        return
    for sig in SIGNALS:
        if sig != signal.SIGINT and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _raise_interrupted)


@dataclass
class SignalState:
    """What `cancel_on_signals` saw: the first signal received, if any."""

    signum: int | None = None

    @property
    def exit_code(self) -> int:
        """The exit status for the signal received (130 if none was: a cancel from elsewhere)."""
        return exit_code(self.signum if self.signum is not None else signal.SIGINT)


@contextmanager
def cancel_on_signals(cancel: Callable[[], Any],
                      tell: Callable[[str], Any] | None = None) -> Iterator[SignalState]:
    """While inside: the first SIGINT, SIGTERM or SIGHUP calls ``cancel()`` (and ``tell`` with a
    message); a second one raises KeyboardInterrupt / `Interrupted` at once. The previous
    handlers are restored on the way out. Outside the main thread it only yields."""
    state = SignalState()
    if not _in_main_thread():
        yield state
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if state.signum is not None:
            _raise_interrupted(signum, frame)
        state.signum = signum
        cancel()
        if tell is not None:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            tell(f"cancelling ({name})... (Ctrl-C again to stop immediately)")

    # A signal set to be ignored stays ignored: `nohup nodeflow run ...` must survive SIGHUP.
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def install_qt_handlers(app: Any, on_signal: Callable[[int], Any] | None = None) -> None:
    """Let a Qt event loop react to SIGINT, SIGTERM and SIGHUP: ``on_signal(signum)`` is called
    in the GUI thread. The default cancels the run of every window (its ``runner``) and leaves
    the event loop with `exit_code`, without closing the windows, so unsaved work stays in the
    autosave and is offered back at the next start.

    Qt's loop runs in C++, where Python handlers never get a turn; a timer hands control to
    the interpreter a few times a second so they do."""
    from PySide6.QtCore import QTimer

    if not _in_main_thread():
        return
    if on_signal is None:
        on_signal = _qt_cancel_and_exit(app)
    pending: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if pending:  # a second signal: stop now
            _raise_interrupted(signum, frame)
        pending.append(signum)
        QTimer.singleShot(0, lambda: on_signal(signum))  # type: ignore[misc]

    for sig in SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)
    timer = QTimer(app)
    timer.timeout.connect(lambda: None)
    timer.start(200)
    app._nodeflow_signal_timer = timer  # keep it alive with the app


def _qt_cancel_and_exit(app: Any) -> Callable[[int], None]:
    def stop(signum: int) -> None:
        for widget in app.topLevelWidgets():
            runner = getattr(widget, "runner", None)
            if runner is not None and callable(getattr(runner, "cancel", None)):
                runner.cancel()
        app.exit(exit_code(signum))

    return stop
