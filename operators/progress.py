"""Progress reporting shared by the Python API and the operators.

Every long step is written once, as a generator of :class:`Progress` whose *return* value is the
result. The Python API drains it into an optional callback; the operators turn the same events
into App progress (``ctx.set_progress`` when delegated, yielded ``set_progress`` triggers when immediate).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    fraction: float  # 0..1
    label: str


def drive(gen, callback=None):
    """Run a progress generator to completion; returns its return value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(event.fraction, event.label)


def scaled(gen, start: float, stop: float):
    """Re-map a sub-step's 0..1 progress into ``start..stop`` of the caller's; returns its result."""
    while True:
        try:
            event = next(gen)
        except StopIteration as s:
            return s.value
        yield Progress(start + (stop - start) * event.fraction, event.label)


def chunks(items, size: int):
    size = max(int(size), 1)
    for i in range(0, len(items), size):
        yield items[i:i + size]
