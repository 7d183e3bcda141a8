"""The signals that stop a run at a step boundary (schedulers' SIGTERM, a user's SIGINT)."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """SIGTERM (what schedulers send before preemption or at the time limit) and SIGINT, while the
    block runs, only record their arrival: the trainer ends the step it is in, writes a
    checkpoint and stops. A second SIGINT interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers may only be set there
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False
