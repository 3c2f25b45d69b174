from .actions import ACTIONS, render_clip, render_clip_with_mask
from .camera import HAND_HELD, PHOTOS, Camera
from .synthetic_videos import SPLITS, write_action_dataset, write_video_dataset
from .token_grid import MIN_COVER, TokenGrid, tubelet_mask

__all__ = [
    'ACTIONS', 'Camera', 'HAND_HELD', 'MIN_COVER', 'PHOTOS', 'SPLITS',
    'TokenGrid', 'render_clip',
    'render_clip_with_mask', 'tubelet_mask', 'write_action_dataset',
    'write_video_dataset'
]
