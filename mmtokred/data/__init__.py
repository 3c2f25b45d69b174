from .synthetic_videos import (ACTIONS, HAND_HELD, MIN_COVER, PHOTOS, SPLITS,
                               Camera, TokenGrid, render_clip,
                               render_clip_with_mask,
                               tubelet_mask, write_action_dataset,
                               write_video_dataset)

__all__ = [
    'ACTIONS', 'Camera', 'HAND_HELD', 'MIN_COVER', 'PHOTOS', 'SPLITS',
    'TokenGrid', 'render_clip',
    'render_clip_with_mask', 'tubelet_mask', 'write_action_dataset',
    'write_video_dataset'
]
