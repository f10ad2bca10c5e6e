"""Build it yourself: plug your own functions into the model, one piece at a time.

    from mixtral_edu.build import plug_in, PIECES, piece_table
    with plug_in(model, {"rms_norm": my_rms_norm}):      # yours here, ours everywhere else
        model.generate(ids, attention_mask=mask)

`plug` is the mechanism (scoped, always restored), `pieces` the list of pieces with their
signatures and slots, `assembled` the forwards whose pieces are inline code. The trace diff
that finds the first piece whose numbers differ is `mixtral_edu.build.diff`.
"""
from .pieces import PIECES, Piece, piece_table
from .plug import PieceError, PieceNotWritten, plug_in

__all__ = ["PIECES", "Piece", "PieceError", "PieceNotWritten", "piece_table", "plug_in"]
