"""The errors a stage raises. The bottom of the stages' layers: every package may import it, it
imports nothing of the project.

Two kinds of failure, treated differently by the build:
- `RejectError`: the input is bad (not audio, no speech, a broken transcript). Permanent: the
  build caches it as a reject with its reason and never tries that input again (unless asked to
  with `--retry-rejects`).
- `TransientError`: the environment failed (disk full, a tool missing from PATH, a subprocess
  killed, storage or network errors). Never cached: the recording is processed again by the next
  build. Any other exception is treated the same way, since nothing says it is the input's fault.
"""
from __future__ import annotations

import errno


class RejectError(Exception):
    """Raised by a stage for input it cannot handle; becomes a Reject, never a crash."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransientError(Exception):
    """The environment, not the input, failed; the work is retried, never cached as a reject."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# OSError numbers that say the machine, not the file, is at fault.
ENVIRONMENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EROFS, errno.EIO, errno.EMFILE, errno.ENFILE,
    errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.EPIPE, errno.EACCES,
})


def failure_kind(err: BaseException) -> str:
    """A short name for a non-reject failure, for the build's report and logs."""
    if isinstance(err, TransientError):
        return err.kind
    if isinstance(err, MemoryError):
        return "out_of_memory"
    if isinstance(err, FileNotFoundError) and err.filename and "/" not in str(err.filename):
        return "tool_missing"  # subprocess could not find a program on PATH
    if isinstance(err, OSError) and err.errno in ENVIRONMENT_ERRNOS:
        return {errno.ENOSPC: "disk_full", errno.EDQUOT: "disk_full", errno.EROFS: "read_only_storage",
                errno.EACCES: "permission_denied", errno.ENOMEM: "out_of_memory"}.get(err.errno, "os_error")
    return "internal_error"
