"""Draw which patches a config's token reduction merged or pruned.

    python tools/visualize_tokens.py VIDEO CONFIG [--checkpoint CKPT]
        [--blocks 0 5 11] [--out work_dirs/tokens] [--scale 4]
        [--cfg-options model.backbone.token_reduction.blocks.type=ToMe ...]

Writes OUT.png (a row per stage: after the input stage and after each chosen
block; a column per tubelet time step) and OUT.gif (every frame, the stages
side by side), each stage labelled with its tokens, and a legend: tubelets
of one merged token share a colour; pruned ones are dark.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from mmaction.registry import MODELS
from mmengine.config import Config, DictAction
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image

import mmtokred.plugin  # noqa: F401  (applies fixes, registers modules)
from mmtokred import checkpoint_fit
from mmtokred.measure.observe import TokenRecorder
from mmtokred.visualization import (annotate, caption, render_animation,
                                    render_grid, stage_labels, token_map,
                                    token_summary)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('video')
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='weights (default: random)')
    parser.add_argument('--blocks', type=int, nargs='+',
                        help='blocks whose output to draw (default: last)')
    parser.add_argument('--out', default='work_dirs/tokens',
                        help='output path without extension')
    parser.add_argument('--scale', type=int, default=4,
                        help='enlarge the pictures this many times')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args()
    if not args.config.endswith('.py'):
        parser.error(f'CONFIG (the second argument) must be a .py config, '
                     f'got {args.config!r}: the video comes first, the '
                     'checkpoint with --checkpoint')

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmaction'))
    model = MODELS.build(cfg.model).eval()
    if args.checkpoint:
        checkpoint_fit.load_checkpoint(model, args.checkpoint,
                                       cfg.get('partial_load'))
    backbone = model.backbone
    depth = len(backbone.blocks)
    blocks = sorted(set(args.blocks)) if args.blocks else [depth - 1]
    if any(not 0 <= b < depth for b in blocks):
        raise ValueError(f'--blocks must be in [0, {depth - 1}], got {blocks}')

    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    data = pipeline(
        dict(filename=args.video, label=-1, start_index=0, modality='RGB'))
    frames = data['inputs'][0].permute(1, 2, 3, 0).numpy().astype(np.uint8)
    batch = model.data_preprocessor(pseudo_collate([data]), False)
    clip = batch['inputs'][0, :1]  # the first view: (1, C, T, H, W)

    backbone.token_reduction.track_source = True
    with torch.no_grad(), TokenRecorder(backbone, states_of=blocks) as seen:
        backbone(clip)
    reducer = backbone.token_reduction.input
    labels = stage_labels(blocks, depth, None if reducer is None else
                          type(reducer).__name__)
    states = dict(zip(labels, [seen.input_state] +
                      [seen.block_states[index] for index in blocks]))

    grid = (frames.shape[0] // backbone.tubelet_size,
            frames.shape[1] // backbone.patch_size,
            frames.shape[2] // backbone.patch_size)
    maps = {name: token_map(state.source[0], grid)
            for name, state in states.items()}
    notes = [token_summary(owners) for owners in maps.values()]
    for label, note in zip(labels, notes):
        print(f'{label}: {note}')

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def enlarge(image):
        return cv2.resize(image, None, fx=args.scale, fy=args.scale,
                          interpolation=cv2.INTER_NEAREST)

    # Labels are drawn on the enlarged pictures: text needs the pixels.
    grid_image = annotate(
        enlarge(render_grid(frames, maps, backbone.tubelet_size)), labels,
        caption(maps, 'columns: tubelet time steps, each at its first '
                'frame'), 'row', notes)
    cv2.imwrite(str(out.with_suffix('.png')), grid_image[..., ::-1])
    legend = caption(maps, 'one image per frame, the stages side by side')
    animation = [
        Image.fromarray(annotate(enlarge(image), labels, legend, 'column',
                                 notes))
        for image in render_animation(frames, maps, backbone.tubelet_size)
    ]
    animation[0].save(out.with_suffix('.gif'), save_all=True,
                      append_images=animation[1:], duration=120, loop=0)
    print(f'wrote {out.with_suffix(".png")} (by row: {"; ".join(labels)}) '
          f'and {out.with_suffix(".gif")}')


if __name__ == '__main__':
    with checkpoint_fit.exit_on_checkpoint_error():
        main()
