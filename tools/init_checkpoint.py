"""Write a checkpoint of a config's model with seeded random weights.

    python tools/init_checkpoint.py CONFIG OUT.pth [--seed 0]

For trying the tools where no trained checkpoint can be downloaded.
"""
import argparse

import torch
from mmaction.registry import MODELS
from mmengine.config import Config

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('out')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = MODELS.build(Config.fromfile(args.config).model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(seed=args.seed, config=args.config)), args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
