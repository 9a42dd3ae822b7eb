"""The emulator's answers: videos, groups and feature plans as the API documents them."""

from __future__ import annotations

import time
from typing import Any

from reka_sync.emulator.store import FEATURE_DEPENDENCIES, VideoRecord


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
        "features": {
            name: ("ready" if now >= at else "processing") for name, at in video.features.items()
        },
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
    }


def group_json(group: Any) -> dict[str, Any]:
    """Given a group, return it as the video-group endpoints answer it."""
    return {
        "group_id": group.group_id,
        "name": group.name,
        "metadata": group.metadata,
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }


def plan(video: VideoRecord, desired: list[str], now: float) -> dict[str, Any]:
    """Given a video, the features wanted and the time, return the feature plan."""
    required: list[str] = []

    def need(feature: str) -> None:
        for dep in FEATURE_DEPENDENCIES[feature]:
            need(dep)
        if feature not in required:
            required.append(feature)

    for feature in desired:
        need(feature)
    statuses = {
        f: (
            "none"
            if f not in video.features
            else "ready"
            if now >= video.features[f]
            else "processing"
        )
        for f in required
    }
    actionable = [
        f
        for f in required
        if statuses[f] == "none" and all(statuses[d] == "ready" for d in FEATURE_DEPENDENCIES[f])
    ]
    return {
        "video_id": video.video_id,
        "all_required": required,
        "statuses": statuses,
        "actionable": actionable,
        "blocked": [],
        "done": all(s == "ready" for s in statuses.values()),
    }


def iso(epoch: float) -> str:
    """Given seconds since the epoch, return the ISO 8601 UTC time."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(epoch))
