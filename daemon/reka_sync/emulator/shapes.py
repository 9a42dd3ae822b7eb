"""The emulator's answers: videos and groups as the API documents them (plans: features.py)."""

from __future__ import annotations

import time
from typing import Any

from reka_sync.emulator.features import features_map
from reka_sync.emulator.store import GroupRecord, VideoRecord


def video_json(video: VideoRecord, now: float) -> dict[str, Any]:
    """Given a video and the time, return it as Get Video answers it."""
    status = video.status(now)
    return {
        "video_id": video.video_id,
        "url": None,
        "status": status,
        "metadata": None
        if status == "uploading"
        else {
            "video_name": video.video_name,
            "title": video.title,
            "description": video.description,
            "duration": None,
            "width": None,
            "height": None,
            "avg_fps": None,
            "thumbnail": None,
            "source": "upload" if video.size else "url",
        },
        "features": features_map(video.features.copy(), now),
        "group_id": video.group_id,
        "error": video.failure if status == "failed" else None,
    }


def record_json(video: VideoRecord, now: float) -> dict[str, Any]:
    """Given a video and the time, return it with what arrived (for /_emulator/videos)."""
    return {
        **video_json(video, now),
        "size": video.size,
        "digest": video.digest,
        "description": video.description,
        "video_name": video.video_name,
        "created_at": video.created_at,
        "feature_runs": {name: run.runs for name, run in video.features.copy().items()},
        "chunking_config": video.chunking_config,
    }


def group_json(group: GroupRecord) -> dict[str, Any]:
    """Given a group, return it as the video-group endpoints answer it (metadata {} if empty)."""
    return {
        "group_id": group.group_id,
        "name": group.name,
        "metadata": group.metadata or {},
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }


def iso(epoch: float) -> str:
    """Given seconds since the epoch, return the ISO 8601 UTC time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))
