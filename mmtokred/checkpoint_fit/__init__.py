"""Whether a checkpoint fits the model it is loaded into: one check for
every tool.

mmengine loads checkpoints non-strictly: a checkpoint of another model loads
none of its tensors, logs a warning of every key and the run goes on with
the weights as initialised. Here every load is compared first: each tensor
of the model must come from the checkpoint with its shape, and each tensor
of the checkpoint must have its place in the model (a checkpoint of a deeper
model would otherwise fill the first blocks silently). A load that does not
match stops, naming how many tensors matched, the first mismatches and the
model the checkpoint seems to be of, unless the user opted in to a partial
load (``partial_load``): True (anything may differ, but something must load)
or the names or patterns of the tensors that may stay as initialised or go
unused (``['cls_head']`` for a fine-tune whose head is new).

- :func:`check` compares a state dict with a module and raises
  :class:`CheckpointMismatch`; the timm loader calls it.
- :func:`checked_loads` puts that check under mmengine's ``load_state_dict``
  for a block of code: ``load_from``, ``resume`` and an ``init_cfg`` of
  type ``Pretrained`` all go through it. The Runner of ``tools/test.py``
  and ``tools/train.py`` runs inside it (:mod:`mmtokred.console`).
- :func:`load_checkpoint`, mmengine's loader checked: every other tool.
"""
from .architecture import (CONFIGS, architecture, config_architecture,
                           describe_checkpoint, matching_configs)
from .errors import (CheckpointError, CheckpointMismatch, CheckpointNotFound,
                     exit_on_checkpoint_error, require_file)
from .fit import (Fit, PartialLoad, allowed, check, check_fit,
                  check_partial_load, compare)
from .listing import SHOWN
from .loads import checked_loads, load_checkpoint

__all__ = [
    'CONFIGS', 'CheckpointError', 'CheckpointMismatch', 'CheckpointNotFound',
    'Fit', 'PartialLoad', 'SHOWN', 'allowed', 'architecture', 'check',
    'check_fit', 'check_partial_load', 'checked_loads', 'compare',
    'config_architecture', 'describe_checkpoint', 'exit_on_checkpoint_error',
    'load_checkpoint', 'matching_configs', 'require_file'
]
