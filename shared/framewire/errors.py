"""Exceptions shared by every service: what went wrong, and what to do about it."""

from __future__ import annotations


class FramewireError(Exception):
    """Base of every Framewire error."""


class ConfigError(FramewireError):
    """The configuration is invalid; the message names the field, the value and the fix."""


class DataError(FramewireError):
    """A record cannot be processed because of its content; it goes to the dead-letter topic.

    ``code`` is a short stable identifier (``corrupt_image``, ``too_many_pixels``...) used to
    count and filter dead letters; ``str(error)`` is the human-readable reason.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TransientError(FramewireError):
    """A failure that may go away on retry (broker, database or blob store unavailable)."""


class SystemicError(TransientError):
    """A fault of the system rather than of a record (a database gone read-only or out of
    space, a full disk, a GPU out of memory): every record would fail the same way, so the
    service pauses, retries with backoff and reports the fault in ``framewire status``
    instead of dead-lettering good records. ``fault`` is the one-line report."""

    def __init__(self, fault: str) -> None:
        super().__init__(fault)
        self.fault = fault
