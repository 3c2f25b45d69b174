"""What an exported recognizer computes: preprocessed clips to class
scores, and which token reductions export (those with fixed token counts
and no scores another runtime would compute otherwise)."""
from typing import Optional

from torch import Tensor, nn


def export_refusal(backbone: nn.Module) -> Optional[str]:
    """Why ``backbone``'s token reduction cannot be exported (None where it
    can). An exported graph has fixed token counts, which the plan of every
    fixed budget knows at build time, while a threshold makes each clip keep
    what its content needs, a count only known once the clip is seen. And
    the 'random' importance (a baseline) hashes positions through ``sin``
    in float64, whose last bits differ between math libraries: an exported
    graph would prune other tokens than torch."""
    reduction = getattr(backbone, 'token_reduction', None)
    input_reducer = getattr(reduction, 'input', None)
    block_reducer = getattr(reduction, 'blocks', None)
    if input_reducer is not None and input_reducer.may_pad:
        return (f'token_reduction.input ({type(input_reducer).__name__} '
                'with a threshold) keeps a number of tokens that depends on '
                'each clip, and clips of one batch then run packed or '
                'padded: an exported graph has fixed token counts. Give it '
                'a fixed budget (NEPAM: ratio= or num_windows=); '
                'tools/calibrate.py --method nepam (or nepam+tome) writes '
                'one for a FLOPs target')
    if block_reducer is not None and block_reducer.variable_length:
        return (f'token_reduction.blocks ({type(block_reducer).__name__} '
                'with a similarity threshold) removes a number of tokens '
                'that depends on each clip: an exported graph has fixed '
                'token counts. Leave the threshold out (ToMe: r= or a '
                'schedule of r per block)')
    if getattr(block_reducer, 'importance', None) == 'random':
        return (f'token_reduction.blocks ({type(block_reducer).__name__} '
                "with importance='random', the baseline) draws its scores "
                "from a float64 sin hash that another runtime's math "
                'library rounds differently, so the exported model would '
                'prune other tokens than torch; choose another importance')
    return None


def check_exportable(backbone: nn.Module, config: str = 'the config') -> None:
    """Raise ValueError naming ``config`` where :func:`export_refusal`
    refuses ``backbone``."""
    reason = export_refusal(backbone)
    if reason is not None:
        raise ValueError(f'{config} cannot be exported: {reason}')


class ClipClassifier(nn.Module):
    """A recognizer's backbone and head as one module: clips ``(N, C, T, H,
    W)``, normalised as MMAction2's data preprocessor gives them, to class
    scores ``(N, num_classes)`` (the head's logits, before any averaging of
    views or softmax). The recognizer is shared, not copied.

    Args:
        recognizer: an MMAction2 recognizer with ``backbone`` and
            ``cls_head`` (and no neck).
    """

    def __init__(self, recognizer: nn.Module) -> None:
        super().__init__()
        if getattr(recognizer, 'with_neck', False):
            raise ValueError('ClipClassifier exports a backbone and a head; '
                             f'{type(recognizer).__name__} has a neck')
        self.backbone = recognizer.backbone
        self.cls_head = recognizer.cls_head

    def forward(self, clips: Tensor) -> Tensor:
        return self.cls_head(self.backbone(clips))
