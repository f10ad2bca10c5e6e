"""What plugging a learner's piece into the model can go wrong with."""
from __future__ import annotations

from typing import Optional


class PieceError(ValueError):
    """A learner's function does not fit the piece it replaces (signature, output, or it raised)."""

    def __init__(self, message: str, piece: Optional[str] = None):
        super().__init__(message)
        self.piece = piece


class PieceNotWritten(PieceError):
    """The piece is still the untouched stub: its body raises NotImplementedError."""
