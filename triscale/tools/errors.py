"""Errors a tool raises on purpose: short, actionable messages a person or a small LLM can act on."""

from __future__ import annotations

__all__ = ["ToolError", "ToolInputError", "ToolLimitError", "ToolTimeoutError", "CalculationError"]


class ToolError(Exception):
    """A failure the caller can read and recover from (bad input, limit, failed calculation).

    ``hint`` says what to do instead; ``str(err)`` contains both.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} Hint: {hint}")


class ToolInputError(ToolError, ValueError):
    """The arguments or the structure are invalid (unknown id/element/path, empty or overlapping atoms)."""


class ToolLimitError(ToolError):
    """The request exceeds a per-method limit (atoms, steps)."""


class ToolTimeoutError(ToolError, TimeoutError):
    """The worker process ran past its wall-time limit and was killed."""


class CalculationError(ToolError, RuntimeError):
    """The calculator failed (SCF not converged, library error, worker crash)."""
