"""Write a checkpoint of a config's model with seeded random weights.

    python tools/init_checkpoint.py CONFIG OUT.pth [--seed 0]

For trying the tools where no trained checkpoint can be downloaded. Prints
one line, what it wrote; mmengine's per-parameter initialisation report (an
INFO line for each parameter) is left out, its warnings and errors are not.
"""
import argparse
from pathlib import Path

import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.logging import MMLogger

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('out')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    # init_weights logs to the current MMLogger: make it one that shows
    # warnings and errors only.
    MMLogger.get_instance('init_checkpoint', log_level='WARNING')
    torch.manual_seed(args.seed)
    model = MODELS.build(Config.fromfile(args.config).model)
    model.init_weights()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(seed=args.seed, config=args.config)), args.out)
    parameters = sum(p.numel() for p in model.parameters())
    print(f'wrote {args.out}: {type(model).__name__} of {args.config}, '
          f'{parameters / 1e6:.2f} M parameters, random weights (seed '
          f'{args.seed})')


if __name__ == '__main__':
    main()
