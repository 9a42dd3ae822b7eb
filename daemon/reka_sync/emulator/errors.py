"""The one error type of the emulator's API layer: what to answer instead of a result."""

from __future__ import annotations


class StoreError(Exception):
    """An API error the emulator answers with: status, type, message, param."""

    def __init__(self, status: int, error_type: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.param = param
