from .synthetic_videos import (ACTIONS, SPLITS, render_clip,
                               write_action_dataset, write_video_dataset)

__all__ = [
    'ACTIONS', 'SPLITS', 'render_clip', 'write_action_dataset', 'write_video_dataset'
]
