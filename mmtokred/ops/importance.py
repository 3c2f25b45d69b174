"""How much each token matters, for models without a class token.

PPT scores token j by the attention the class token pays to it times
``||v_j||``. VideoMAE has no class token; two stand-ins:

- :func:`pooled_query_importance`: the attention that the mean query pays
  to each key, softmax(mean(q) K^T). O(N) and usable next to fused attention.
- :func:`received_attention_importance`: the attention each key receives,
  averaged over all queries. Needs the full ``(N, N)`` matrix.

Both sum the heads, multiply by ``||v_j||`` and normalise over the tokens.
"""
from typing import Optional

import torch
from torch import Tensor


def _normalise(scores: Tensor, v: Tensor, valid: Optional[Tensor]) -> Tensor:
    # v: (B, H, N, D) -> the norm of each token's full value vector.
    scores = scores.sum(1) * v.transpose(1, 2).flatten(2).norm(dim=-1)
    if valid is not None:
        scores = scores * valid
    return scores / scores.sum(-1, keepdim=True).clamp(min=1e-12)


def pooled_query_importance(q: Tensor,
                            k: Tensor,
                            v: Tensor,
                            scale: float,
                            key_bias: Optional[Tensor] = None,
                            valid: Optional[Tensor] = None) -> Tensor:
    """``(B, N)`` importance from the attention of the mean query.

    Args:
        q, k, v: ``(B, H, N, D)`` of one attention layer.
        key_bias: ``(B, N)`` bias the layer added to the logits, or None.
        valid: ``(B, N)`` False for padding (left out of the mean query and
            given importance 0).
    """
    if valid is None:
        query = q.mean(2, keepdim=True)
    else:
        weights = valid[:, None, :, None].to(q.dtype)
        query = (q * weights).sum(2, keepdim=True) / weights.sum(
            2, keepdim=True)
    logits = (query @ k.transpose(-2, -1)).squeeze(2) * scale  # (B, H, N)
    if key_bias is not None:
        logits = logits + key_bias[:, None]
    return _normalise(logits.float().softmax(-1), v, valid)


def received_attention_importance(q: Tensor,
                                  k: Tensor,
                                  v: Tensor,
                                  scale: float,
                                  key_bias: Optional[Tensor] = None,
                                  valid: Optional[Tensor] = None) -> Tensor:
    """``(B, N)`` importance from the attention each key receives, averaged
    over the (valid) queries; materialises the ``(B, H, N, N)`` matrix."""
    logits = (q @ k.transpose(-2, -1)).float() * scale
    if key_bias is not None:
        logits = logits + key_bias[:, None, None]
    attention = logits.softmax(-1)
    if valid is None:
        received = attention.mean(2)
    else:
        weights = valid[:, None, :, None].float()
        received = (attention * weights).sum(2) / weights.sum(2)
    return _normalise(received, v, valid)


def concentration(importance: Tensor,
                  valid: Optional[Tensor] = None) -> Tensor:
    """``(B,)`` squared coefficient of variation of the importances, M^2 var.

    For M scores summing to 1, var = CV^2 / M^2, so the plain variance
    shrinks with the token count; M^2 var does not. 0 when attention is
    spread evenly, large when it is concentrated on few tokens.
    """
    if valid is None:
        count = torch.full(importance.shape[:1], importance.shape[1],
                           dtype=importance.dtype, device=importance.device)
        mean = importance.mean(1)
        variance = (importance - mean[:, None]).square().mean(1)
    else:
        weights = valid.to(importance.dtype)
        count = weights.sum(1)
        mean = (importance * weights).sum(1) / count
        variance = ((importance - mean[:, None]).square() *
                    weights).sum(1) / count
    return count.square() * variance
