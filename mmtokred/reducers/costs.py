"""The products the reducers compute, in closed form: multiply-accumulates
of matrix products only (what torch's FLOP counter counts), from shapes.
Each reducer's ``macs`` adds up its own; :mod:`mmtokred.measure.flops`
adds the blocks'."""
from typing import NamedTuple


class Widths(NamedTuple):
    """The widths of a ViT block."""
    embed: int  #: channels of a token
    heads: int
    head: int  #: channels of a head
    hidden: int  #: of the MLP


def matching(tokens: int, channels: int) -> int:
    """ToMe's cosine similarities of the A (even) with the B (odd) tokens."""
    return (tokens + 1) // 2 * (tokens // 2) * channels


def matching_rounds(tokens: int, removed: int, channels: int) -> int:
    """Matchings that merge ``removed`` tokens in rounds of at most half
    the tokens."""
    macs = 0
    while removed > 0:
        step = min(removed, tokens // 2)
        macs += matching(tokens, channels)
        tokens, removed = tokens - step, removed - step
    return macs


def nearest(keep_mean: str, tokens: int, removed: int, channels: int) -> int:
    """'nearest': each removed token's similarity to every kept one."""
    if keep_mean != 'nearest':
        return 0
    return removed * (tokens - removed) * channels


def similarities(tokens: int, channels: int) -> int:
    """Every token's cosine similarity to every other."""
    return tokens * tokens * channels
