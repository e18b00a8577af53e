"""Pauses between attempts of a commit that another writer beat (push and staged commits)."""

from __future__ import annotations

import random
import threading


class Backoff:
    """Jittered exponential pauses between attempts ("full jitter": a random pause up to a
    bound that doubles each time, from 50 ms to ``most``)."""

    def __init__(self, first: float = 0.05, most: float = 2.0) -> None:
        self.bound = first
        self.most = most
        self._never = threading.Event()

    def sleep(self, remaining: float) -> None:
        self._never.wait(max(0.0, min(random.uniform(0, self.bound), remaining)))
        self.bound = min(self.bound * 2, self.most)
