from .synthetic_videos import write_video_dataset

__all__ = ['write_video_dataset']
