"""FLOPs of a forward pass, attention included: counted, and from shapes.

:func:`count_gflops` counts a forward pass as it runs. mmengine's counter
has no handle for ``scaled_dot_product_attention`` and counts nothing for
it; PyTorch's FlopCounterMode knows the CUDA kernels but not the CPU one.
Both are counted here.

:class:`ShapeFlops` gives the same count for a VideoMAE recogniser without
running it: the token plan (:func:`mmtokred.ops.plan_tokens`) knows the
tokens every block sees, a block's multiply-accumulates are a closed form
of tokens and widths, and each reducer's own products are a closed form of
the tokens it sees and removes (its ``macs``,
:mod:`mmtokred.reducers.costs`). What the counter counts, and so what is
counted here: matrix products and convolutions (not norms, softmax,
sorting, gathers or elementwise work).
"""
import inspect
import json
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..ops.attention import key_bias_mode
from ..reducers import projection_weight
from ..reducers.costs import Widths
from ..upstream_fixes import make_mmaction_importable

make_mmaction_importable()  # mmaction.models cannot be imported without it

from mmaction.models.backbones.vit_mae import VisionTransformer  # noqa: E402
from mmaction.registry import MODELS  # noqa: E402

CPU = torch.device('cpu')

aten = torch.ops.aten


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args,
                    **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: Attention kernels FlopCounterMode leaves uncounted.
_EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
}


@torch.no_grad()
def count_gflops(forward: Callable[[], object]) -> float:
    """GFLOPs of ``forward()`` in multiply-accumulates (the MMAction2 model
    zoo's and mmengine's convention: ViT-B VideoMAE 16x224 is about 180)."""
    with FlopCounterMode(display=False,
                         custom_mapping=_EXTRA_FORMULAS) as counter:
        forward()
    # FlopCounterMode counts a multiply-accumulate as 2 FLOPs.
    return counter.get_total_flops() / 2 / 1e9


class ShapeFlops:
    """GFLOPs of a VideoMAE recogniser's forward pass on one view, counted
    as :func:`count_gflops` counts it, from the shapes alone.

    Counted: the patch projection (of the tubelets the input stage
    projects), in every block the qkv projection, attention logits and
    values (each head wider by the log-size bias channel, padded to a
    multiple of 8, where proportional attention meets tokens with sizes and
    the key bias of fp32 on CPU is a channel: :func:`~mmtokred.ops.
    attention.key_bias_mode`),
    the output projection and the MLP (on the tokens left after the
    block's reducer), the reducers' own products, and the head's linear
    layer.

    Each reduction is planned and counted once (:attr:`counted`).

    Args:
        model_cfg: a recogniser config with a
            ``TokenReductionVisionTransformer`` backbone and a head with
            one linear layer (``in_channels`` to ``num_classes``).
    """

    def __init__(self, model_cfg: Dict) -> None:
        backbone = {k: v for k, v in model_cfg['backbone'].items()
                    if k not in ('type', 'token_reduction')}
        args = inspect.signature(VisionTransformer.__init__).bind(
            None, **backbone)
        args.apply_defaults()
        a = args.arguments
        if a['return_feat_map']:
            raise ValueError('ShapeFlops counts the pooled features; '
                             'return_feat_map=True keeps every token')
        embed, heads = a['embed_dims'], a['num_heads']
        self.widths = Widths(embed, heads, embed // heads,
                             int(embed * a['mlp_ratio']))
        head = model_cfg['cls_head']
        self.head = head['in_channels'] * head['num_classes']
        # The plan depends on the token grid and the depth only: a backbone
        # one channel per head wide plans (and refuses budgets) as the
        # configured one does, at no cost.
        self._planner = MODELS.build(dict(
            model_cfg['backbone'], embed_dims=heads, token_reduction=None,
            pretrained=None, init_cfg=None))
        # What the backbone, as an adapter of mmtokred.core, reports.
        self.grid = self._planner.configured_grid
        self.depth = len(self._planner.blocks)
        self.prefix = self._planner.num_prefix_tokens
        #: Pixels of one patch (or tubelet) the projection takes.
        self.tubelet = projection_weight(
            self._planner.patch_projection)[0].numel()
        #: JSON of each reduction counted -> (tokens entering every block
        #: and leaving the last, multiply-accumulates).
        self.counted: Dict[str, Tuple[List[int], int]] = {}
        self._planned = json.dumps(None)  # built without token reduction
        self.dense = self.gflops(None)

    def gflops(self, token_reduction: Optional[Dict]) -> float:
        """GFLOPs (multiply-accumulates) with ``token_reduction``.

        Raises:
            ValueError: where the tokens depend on each clip (NEPAM's or
                ToMe's threshold): count those per clip
                (:meth:`clip_gflops`).
        """
        return self._count(token_reduction)[1] / 1e9

    def tokens(self, token_reduction: Optional[Dict]) -> List[int]:
        """Tokens entering every block, then those leaving the last."""
        return list(self._count(token_reduction)[0])

    def depends_on_clips(self, token_reduction: Optional[Dict]) -> bool:
        """Whether each clip keeps its own number of tokens (an input stage
        that may pad, a block stage of variable length)."""
        reduction = self._plan(token_reduction).token_reduction
        return reduction.may_pad or getattr(reduction.blocks,
                                            'variable_length', False)

    def clip_gflops(self, token_reduction: Optional[Dict],
                    tokens: Sequence[int]) -> float:
        """GFLOPs of one view that kept ``tokens`` (entering every block,
        then leaving the last: what :class:`~.observe.TokenRecorder`
        records of a clip), for reductions whose tokens depend on the
        clip."""
        if len(tokens) != self.depth + 1:
            raise ValueError(f'tokens must list the {self.depth} blocks and '
                             f'the tokens leaving the last, got {len(tokens)}')
        self._plan(token_reduction)
        return self._macs(token_reduction or {}, list(tokens)) / 1e9

    def _plan(self, reduction: Optional[Dict]):
        """The planner set to ``reduction``; set again only when it
        changes (a sweep counts every test view of one point in turn)."""
        key = json.dumps(reduction, sort_keys=True)
        if key != self._planned:
            self._planner.set_token_reduction(reduction or None)
            self._planned = key
        return self._planner

    def _count(self, reduction: Optional[Dict]) -> Tuple[List[int], int]:
        # The key bias mode changes the attention's width: part of the key.
        key = json.dumps([reduction, key_bias_mode(CPU, torch.float32)],
                         sort_keys=True)
        if key not in self.counted:
            if self.depends_on_clips(reduction):
                raise ValueError(
                    'this token_reduction keeps as many tokens as each clip '
                    'allows (a threshold): its FLOPs depend on the clip; '
                    'count them per clip from the tokens it kept '
                    '(ShapeFlops.clip_gflops) or with count_gflops')
            self.counted[key] = self._closed_form(reduction or {})
        return self.counted[key]

    def _closed_form(self, reduction: Dict) -> Tuple[List[int], int]:
        planned = self._plan(reduction).token_reduction
        blocks = planned.blocks
        tokens = planned.plan(self.grid, self.depth, self.prefix).tokens
        last = tokens[-1]
        tokens.append(last - (0 if blocks is None else
                              blocks.removal(self.depth - 1, last)))
        return tokens[:], self._macs(reduction, tokens)

    def _macs(self, reduction: Dict, tokens: List[int]) -> int:
        """Multiply-accumulates of a view whose blocks see ``tokens`` (the
        planner set to ``reduction``)."""
        planned = self._planner.token_reduction
        blocks = planned.blocks
        w = self.widths
        track = reduction.get('track_source', False)
        proportional = reduction.get('proportional_attention', False)
        projected, macs, sized = math.prod(self.grid), self.head, False
        if planned.input is not None:
            projected, own, sized = planned.input.macs(
                self.grid, tokens[0], track, w)
            macs += own
        macs += projected * w.embed * self.tubelet
        for n, left in zip(tokens, tokens[1:]):
            head = w.head
            if proportional and sized and key_bias_mode(
                    CPU, torch.float32) == 'channel':
                # log(size) rides in one more channel, padded to 8.
                head += 8 - w.head % 8
            macs += (n * w.embed * 3 * w.embed + 2 * w.heads * n * n * head
                     + n * w.embed * w.embed + 2 * left * w.embed * w.hidden)
            if left < n:
                own, carries = blocks.macs(n, n - left, w)
                macs += own
                sized = sized or carries
        return macs
