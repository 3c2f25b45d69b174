from .synthetic_videos import (ACTIONS, render_clip, write_action_dataset,
                               write_video_dataset)

__all__ = [
    'ACTIONS', 'render_clip', 'write_action_dataset', 'write_video_dataset'
]
