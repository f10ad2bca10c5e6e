"""The shared look of every view: colour-blind-safe colours and readable token labels.

Categories (experts, mask reasons, kv-head groups) use the Okabe-Ito palette,
which stays distinguishable for the common colour-vision deficiencies; scales
(probabilities, attention weights, bytes) use cividis or viridis, which are
perceptually uniform and readable in grey.
"""
from __future__ import annotations

import html
from typing import Dict, List, Optional, Sequence

from ..i18n import N_

# Words the views show that come from the model's records (a step's kind, why a mask cell is
# hidden: mixtral_edu.modeling.masks.REASONS) or from a warper's name; views show them
# through _(), and these marks put them in the catalog.
SHOWN_WORDS = (N_("prefill"), N_("decode"), N_("forward"),
               N_("visible"), N_("future"), N_("outside window"), N_("padding"),
               N_("temperature"), N_("top-k"), N_("top-p"))

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO: Dict[str, str] = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "black": "#000000",
}
# Okabe-Ito's vermillion is for areas and lines; as text on white it is too pale (3.9:1), so text
# uses this darker shade (5.5:1, WCAG AA for any size).
TEXT_VERMILLION = "#B34700"
# the same for the headers of source columns (white text on them): at least 4.5:1 against white
TEXT_BLUISH_GREEN = "#007A58"      # 5.3:1 (Okabe-Ito's #009E73 is 3.4:1)
TEXT_REDDISH_PURPLE = "#9C4F7E"    # 5.5:1 (Okabe-Ito's #CC79A7 is 3.1:1)
GREY = "#BBBBBB"
LIGHT_GREY = "#EEEEEE"
DARK_GREY = "#555555"

SEQUENTIAL = "Cividis"   # probabilities, weights: dark = low, yellow = high
SEQUENTIAL_ALT = "Viridis"

# One colour per expert; 8 (Mixtral's E) before the cycle repeats.
EXPERT_COLORS: List[str] = [OKABE_ITO[k] for k in
                            ("orange", "sky_blue", "bluish_green", "yellow", "blue", "vermillion",
                             "reddish_purple", "black")]

# Why a mask cell is hidden; keys are mixtral_edu.modeling.masks.VISIBLE / FUTURE / WINDOW / PADDING (0..3).
MASK_COLORS: Dict[int, str] = {
    0: OKABE_ITO["bluish_green"],  # visible
    1: GREY,                       # future (causal)
    2: OKABE_ITO["orange"],        # outside the sliding window
    3: OKABE_ITO["reddish_purple"],  # padding
}

# The kept / removed / chosen states of a token in the sampling view.
KEPT, REMOVED, CHOSEN = OKABE_ITO["blue"], GREY, OKABE_ITO["vermillion"]

FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=12)


def expert_color(e: int) -> str:
    return EXPERT_COLORS[e % len(EXPERT_COLORS)]


def discrete_colorscale(colors: Sequence[str]) -> List[list]:
    """A heatmap colorscale with one flat band per category 0..n-1 (use zmin=-0.5, zmax=n-0.5)."""
    n = len(colors)
    scale = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def token_label(text: str, max_chars: int = 8) -> str:
    """A short, visible, HTML-safe label for one token's text.

    Spaces become '·' and newlines '⏎' (so a token of spaces is not blank), long
    tokens are cut with '…', and <, >, & are escaped because plotly renders
    labels as HTML.
    """
    shown = text.replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥")
    if shown == "":
        shown = "∅"
    if len(shown) > max_chars:
        shown = shown[: max_chars - 1] + "…"
    return html.escape(shown, quote=False)  # plotly shows &quot; literally


def token_texts(ids: Sequence[int], tokenizer=None) -> List[str]:
    """Each id's own text (no cleanup), or '#17' without a tokenizer.

    Works with a transformers tokenizer (convert_ids_to_tokens / decode) and a
    raw `tokenizers.Tokenizer` (id_to_token / decode).
    """
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [f"#{i}" for i in ids]
    out = []
    for i in ids:
        try:
            text = tokenizer.decode([i])
        except Exception:  # an id past the tokenizer's vocabulary (a random model's)
            text = f"#{i}"
        special = _special_name(tokenizer, i)
        out.append(special if special is not None else text)
    return out


def _special_name(tokenizer, i: int) -> Optional[str]:
    """'<pad>', '<s>' ... for special ids (decode would drop them or return '')."""
    ids = getattr(tokenizer, "all_special_ids", None)
    if ids is not None and i in ids:
        return tokenizer.convert_ids_to_tokens(i)
    if hasattr(tokenizer, "id_to_token") and not hasattr(tokenizer, "all_special_ids"):
        name = tokenizer.id_to_token(i)
        if name is not None and name.startswith("<") and name.endswith(">"):
            return name
    return None


def token_labels(ids: Sequence[int], tokenizer=None, max_chars: int = 8, number: bool = True) -> List[str]:
    """Axis labels for a row of tokens: 'cat<sub>3</sub>', the token then its position as a subscript
    (also keeps equal tokens apart: plotly merges equal category labels into one tick)."""
    texts = token_texts(ids, tokenizer)
    return [token_label(x, max_chars) + (f"<sub>{t}</sub>" if number else "") for t, x in enumerate(texts)]


def base_layout(title: str, height: int = 450, alt: str = "", **kw) -> dict:
    """Layout keys every view shares: title at the top left, the font, white background.

    alt: the figure's text alternative, one sentence saying what it shows (kept in layout.meta;
    pages use it as the figure's accessible name, exports as the image's description).
    """
    layout = dict(title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)), height=height,
                  font=FONT, plot_bgcolor="white", paper_bgcolor="white",
                  margin=dict(l=70, r=30, t=90, b=60))
    if alt:
        layout["meta"] = dict(alt=alt)
    layout.update(kw)
    return layout
