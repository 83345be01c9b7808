"""The one error a stage raises for input it cannot handle. The bottom of the stages' layers:
every package may import it, it imports nothing of the project."""
from __future__ import annotations


class RejectError(Exception):
    """Raised by a stage for input it cannot handle; becomes a Reject, never a crash."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
