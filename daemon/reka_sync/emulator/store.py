"""The emulator's state: videos, groups and quotas, per API key, optionally persisted.

Rules follow ../shared/reka-vision-api.md and its gap decisions. Time is passed
in, so the status of a video (uploading → uploaded or failed) and of its
feature runs (see features.py) is computed from when they started, not by
timers. With a data folder, every change is appended to ``state.jsonl`` and
replayed on start.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reka_sync.emulator import features
from reka_sync.emulator.errors import StoreError
from reka_sync.emulator.features import FeatureRun, TriggerOptions

GROUP_METADATA_LIMIT = 500


@dataclass
class VideoRecord:
    video_id: str
    owner: str
    video_name: str
    description: str | None
    created_at: float
    ready_at: float
    size: int = 0
    digest: str | None = None  # xxh3-128:<hex> of the bytes received
    video_url: str | None = None
    group_id: str | None = None
    title: str | None = None
    failure: str | None = None
    features: dict[str, FeatureRun] = field(default_factory=dict)
    chunking_config: dict[str, Any] | None = None  # of the last transcript trigger accepted

    def status(self, now: float) -> str:
        """Given the time, return the upload status: uploading, uploaded or failed."""
        if now < self.ready_at:
            return "uploading"
        return "failed" if self.failure else "uploaded"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoRecord:
        """Given a video as persisted (this shape or an older one), return the record."""
        runs = {k: FeatureRun.from_json(v) for k, v in (data.get("features") or {}).items()}
        return cls(**{**data, "features": runs})


@dataclass
class GroupRecord:
    group_id: str
    owner: str
    name: str
    metadata: dict[str, Any]  # {} when empty, never None (Reka's own client needs a mapping)
    created_at: float
    updated_at: float


class Store:
    """All videos and groups; every method is atomic under one lock."""

    def __init__(self, data_dir: Path, *, group_cap: int = 10, persist: bool = False) -> None:
        self.blobs = data_dir / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.group_cap = group_cap
        self.videos: dict[str, VideoRecord] = {}
        self.groups: dict[str, GroupRecord] = {}
        self._lock = threading.Lock()
        self._log_path = data_dir / "state.jsonl" if persist else None
        if self._log_path and self._log_path.exists():
            self._replay(self._log_path)

    # -- persistence ---------------------------------------------------------------------

    def _replay(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            kind, data = entry["op"], entry["data"]
            if kind == "video":
                self.videos[data["video_id"]] = VideoRecord.from_json(data)
            elif kind == "group":
                self.groups[data["group_id"]] = GroupRecord(
                    **{**data, "metadata": data.get("metadata") or {}}
                )
            elif kind == "del_video":
                self.videos.pop(data, None)
            elif kind == "del_group":
                self.groups.pop(data, None)

    def _save(self, op: str, data: Any) -> None:
        if self._log_path is None:
            return
        if isinstance(data, (VideoRecord, GroupRecord)):
            data = asdict(data)
        with self._log_path.open("a") as log:
            log.write(json.dumps({"op": op, "data": data}) + "\n")

    # -- videos --------------------------------------------------------------------------

    def add_video(self, record: VideoRecord) -> None:
        with self._lock:
            if record.group_id is not None:
                self._owned_group(record.owner, record.group_id)
            self.videos[record.video_id] = record
            self._save("video", record)

    def check_group(self, owner: str, group_id: str) -> None:
        with self._lock:
            self._owned_group(owner, group_id)

    def all_videos(self) -> list[VideoRecord]:
        """Return every video of every key (for the control endpoint)."""
        with self._lock:
            return list(self.videos.values())

    def video(self, owner: str, video_id: str) -> VideoRecord:
        with self._lock:
            return self._owned_video(owner, video_id)

    def list_videos(
        self, owner: str, ids: list[str] | None = None, group_id: str | None = None
    ) -> list[VideoRecord]:
        with self._lock:
            found = [v for v in self.videos.values() if v.owner == owner]
        if ids:
            wanted = set(ids)
            found = [v for v in found if v.video_id in wanted]
        if group_id is not None:
            found = [v for v in found if v.group_id == group_id]
        return sorted(found, key=lambda v: v.created_at)

    def update_video(self, owner: str, video_id: str, changes: dict[str, Any]) -> VideoRecord:
        with self._lock:
            video = self._owned_video(owner, video_id)
            if changes.get("group_id") is not None:
                self._owned_group(owner, changes["group_id"])
            for key in ("video_name", "title", "description", "group_id"):
                if changes.get(key) is not None:
                    setattr(video, key, changes[key])
            self._save("video", video)
            return video

    def delete_video(self, owner: str, video_id: str) -> VideoRecord:
        with self._lock:
            video = self._owned_video(owner, video_id)
            del self.videos[video_id]
            self._save("del_video", video_id)
        (self.blobs / video_id).unlink(missing_ok=True)
        return video

    def trigger_feature(
        self,
        owner: str,
        video_id: str,
        feature: str,
        options: TriggerOptions,
        now: float,
        delay: float,
        draw_failure: Callable[[], bool],
        note: dict[str, Any],
    ) -> tuple[int, str]:
        """Given a trigger of a video's feature, the time, the delay of a new run and a draw
        of whether it fails, return the HTTP status and feature status to answer (see
        features.trigger, which also fills `note`). Raise StoreError if the video is not
        the key's, not uploaded, or a dependency is not ready.
        """
        with self._lock:
            video = self._owned_video(owner, video_id)
            answer = features.trigger(
                video.features,
                feature,
                options.force,
                video.status(now),
                now,
                delay,
                draw_failure,
                note,
            )
            if feature == "transcript" and options.chunking_config is not None:
                video.chunking_config = options.chunking_config
            self._save("video", video)
            return answer

    # -- groups --------------------------------------------------------------------------

    def create_group(
        self, owner: str, name: str, metadata: dict[str, Any] | None, now: float
    ) -> GroupRecord:
        _check_metadata(metadata)
        with self._lock:
            mine = [g for g in self.groups.values() if g.owner == owner]
            if any(g.name == name for g in mine):
                raise StoreError(
                    409, "conflict_error", f"Video group {name!r} already exists", "name"
                )
            if len(mine) >= self.group_cap:
                raise StoreError(
                    400,
                    "validation_error",
                    f"group limit reached: accounts may create up to {self.group_cap} video groups",
                    "name",
                )
            group = GroupRecord(str(uuid.uuid4()), owner, name, metadata or {}, now, now)
            self.groups[group.group_id] = group
            self._save("group", group)
            return group

    def group(self, owner: str, group_id: str) -> GroupRecord:
        with self._lock:
            return self._owned_group(owner, group_id)

    def list_groups(self, owner: str) -> list[GroupRecord]:
        with self._lock:
            return sorted(
                (g for g in self.groups.values() if g.owner == owner), key=lambda g: g.created_at
            )

    def update_group(
        self,
        owner: str,
        group_id: str,
        name: str | None,
        metadata: dict[str, Any] | None,
        now: float,
    ) -> GroupRecord:
        _check_metadata(metadata)
        with self._lock:
            group = self._owned_group(owner, group_id)
            if name is not None and name != group.name:
                if any(g.owner == owner and g.name == name for g in self.groups.values()):
                    raise StoreError(
                        409, "conflict_error", f"Video group {name!r} already exists", "name"
                    )
                group.name = name
            if metadata is not None:
                group.metadata = metadata
            group.updated_at = now
            self._save("group", group)
            return group

    def delete_group(self, owner: str, group_id: str) -> None:
        with self._lock:
            self._owned_group(owner, group_id)
            del self.groups[group_id]
            self._save("del_group", group_id)
            for video in self.videos.values():
                if video.group_id == group_id:
                    video.group_id = None
                    self._save("video", video)

    def move_videos(self, owner: str, group_id: str, video_ids: list[str]) -> list[str]:
        with self._lock:
            self._owned_group(owner, group_id)
            moved = []
            for video_id in video_ids:
                video = self.videos.get(video_id)
                if video is not None and video.owner == owner:
                    video.group_id = group_id
                    self._save("video", video)
                    moved.append(video_id)
            return moved

    # -- helpers (call with the lock held) ------------------------------------------------

    def _owned_video(self, owner: str, video_id: str) -> VideoRecord:
        video = self.videos.get(video_id)
        if video is None or video.owner != owner:
            raise StoreError(404, "not_found_error", "Video not found", "video_id")
        return video

    def _owned_group(self, owner: str, group_id: str) -> GroupRecord:
        group = self.groups.get(group_id)
        if group is None or group.owner != owner:
            raise StoreError(404, "not_found_error", "Video group not found", "group_id")
        return group


def _check_metadata(metadata: dict[str, Any] | None) -> None:
    if metadata is not None and len(json.dumps(metadata)) > GROUP_METADATA_LIMIT:
        raise StoreError(
            400,
            "validation_error",
            f"metadata must be at most {GROUP_METADATA_LIMIT} characters",
            "metadata",
        )
