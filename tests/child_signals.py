"""Children that a test interrupts start with SIGINT and SIGHUP at their defaults.

A shell starts background jobs with SIGINT ignored (and `nohup` ignores SIGHUP), and children
inherit ignored signals; nodeflow rightly keeps an ignored signal ignored. So when the test run
itself was started in the background, a test's Ctrl-C would never reach its child. Passed as
``preexec_fn``, this gives the child what a terminal gives a program."""

from __future__ import annotations

import signal


def default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
