"""How much each token matters, for models without a class token.

PPT scores token j by the attention the class token pays to it times
``||v_j||``. VideoMAE has no class token and mean-pools its last tokens;
the scores compared here:

- :func:`received_attention_importance`: the attention each key receives,
  averaged over all queries: the exact analogue of class-token attention
  for a mean readout. Needs the full ``(N, N)`` matrix.
- :func:`pooled_query_importance`: the attention that the mean query pays
  to each key, softmax(mean(q) K^T). O(N) and usable next to fused attention,
  but not the same quantity.
- :func:`activation_norm_importance`: the L1 norm of each token (STA).
- :func:`attention_sharpness_importance`: how sharply each token's query
  attends, log(N) minus the entropy of its attention row, averaged over
  heads (vid-TLDR's saliency).
- :func:`random_importance`: a seeded pseudo-random score, the floor every
  criterion must beat.

Every score is ``(B, N)``, non-negative and sums to 1 over the (valid)
tokens. The two attention-received scores sum the heads and multiply by
``||v_j||`` as PPT does.
"""
import math
from typing import Optional

import torch
from torch import Tensor


def _normalise(scores: Tensor, v: Tensor, valid: Optional[Tensor]) -> Tensor:
    # v: (B, H, N, D) -> the norm of each token's full value vector.
    scores = scores.sum(1) * v.transpose(1, 2).flatten(2).norm(dim=-1)
    return _sum_to_one(scores, valid)


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
    # Scaled before the product, as the fused kernels scale: in fp16,
    # q k^T itself can pass 65504 (inf, then NaN importances).
    logits = ((query * scale) @ k.transpose(-2, -1)).squeeze(2)  # (B, H, N)
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
    logits = ((q * scale) @ k.transpose(-2, -1)).float()  # scaled first
    if key_bias is not None:
        logits = logits + key_bias[:, None, None]
    attention = logits.softmax(-1)
    if valid is None:
        received = attention.mean(2)
    else:
        weights = valid[:, None, :, None].float()
        received = (attention * weights).sum(2) / weights.sum(2)
    return _normalise(received, v, valid)


def activation_norm_importance(x: Tensor,
                               valid: Optional[Tensor] = None) -> Tensor:
    """``(B, N)`` importance from the L1 norm of each token ``x`` ``(B, N,
    C)``, as STA scores tokens of VideoMAE."""
    return _sum_to_one(x.float().abs().sum(-1), valid)


def attention_sharpness_importance(q: Tensor,
                                   k: Tensor,
                                   scale: float,
                                   key_bias: Optional[Tensor] = None,
                                   valid: Optional[Tensor] = None) -> Tensor:
    """``(B, N)`` importance from the sharpness of each query's attention:
    log(N) minus the entropy of its row, averaged over heads (vid-TLDR);
    materialises the ``(B, H, N, N)`` matrix."""
    logits = ((q * scale) @ k.transpose(-2, -1)).float()  # scaled first
    if key_bias is not None:
        logits = logits + key_bias[:, None, None]
    log_attention = logits.log_softmax(-1)
    entropy = -(log_attention.exp() * log_attention).sum(-1).mean(1)
    # log(N) from the shape, not from a tensor made on the host.
    log_keys = math.log(k.shape[2]) if valid is None else \
        valid.sum(1, keepdim=True).to(entropy.dtype).log()
    sharpness = (log_keys - entropy).clamp(min=0)
    return _sum_to_one(sharpness, valid)


def random_importance(x: Tensor, seed: int,
                      valid: Optional[Tensor] = None) -> Tensor:
    """``(B, N)`` pseudo-random importance of the tokens of ``x`` ``(B, N,
    C)``: a hash of (seed, token position), so it is the same for a clip
    alone and in any batch, and costs no host round trip."""
    position = torch.arange(x.shape[1], device=x.device, dtype=torch.float64)
    noise = torch.sin(position * 12.9898 + (seed % 9973) * 78.233) * 43758.5453
    scores = (noise - noise.floor()).float() + 1e-6
    return _sum_to_one(scores.expand(x.shape[0], -1), valid)


def _sum_to_one(scores: Tensor, valid: Optional[Tensor]) -> Tensor:
    if valid is not None:
        scores = scores * valid
    return scores / scores.sum(-1, keepdim=True).clamp(min=1e-12)


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
