"""The emulator's indexing features: the catalog, one run record per triggered feature, plans.

Rules follow ../shared/reka-vision-api.md sections 2.2, 2.3 and 5 and its gap
decisions. A run keeps when it started, when it ends and whether it was drawn
to fail, so its status is computed from the time, not by timers: ``pending``
for the first tenth of its delay (at most half a second), then ``processing``,
then ``ready``, or ``failed`` if it was drawn to fail. A feature never
triggered is ``none``, or ``blocked`` when one of its dependencies is
``failed`` or ``blocked``. Runs are replaced, never changed in place, so a
copy of a video's run map is a consistent view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reka_sync.emulator.errors import StoreError

PENDING_SHARE = 0.1  # of a run's delay spent "pending" (queued) before "processing"
PENDING_CAP = 0.5  # seconds
IN_HAND = ("pending", "processing", "ready")  # a trigger without force restarts none of these


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    depends_on: tuple[str, ...]
    produces: tuple[str, ...]


FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            "transcript",
            "Speech-to-text, video chunking and scene boundaries",
            (),
            ("transcript", "scenes"),
        ),
        Feature(
            "captions",
            "A visual description per chunk: video chat, captions, text search over captions",
            ("transcript",),
            ("captions",),
        ),
        Feature(
            "embeddings",
            "Visual and text vectors for semantic search",
            ("transcript", "captions"),
            ("embeddings",),
        ),
        Feature(
            "objects",
            "Object detection and tracking on sampled frames",
            ("transcript",),
            ("objects",),
        ),
    )
}
FEATURE_DEPENDENCIES: dict[str, list[str]] = {
    name: list(feature.depends_on) for name, feature in FEATURES.items()
}


@dataclass(frozen=True)
class FeatureRun:
    started_at: float
    ready_at: float
    fails: bool = False
    runs: int = 1  # runs of this feature on this video so far, this one included

    def status(self, now: float) -> str:
        """Given the time, return the run's status: pending, processing, ready or failed."""
        if now >= self.ready_at:
            return "failed" if self.fails else "ready"
        pending_for = min((self.ready_at - self.started_at) * PENDING_SHARE, PENDING_CAP)
        return "pending" if now < self.started_at + pending_for else "processing"

    @classmethod
    def from_json(cls, value: Any) -> FeatureRun:
        """Given a run as persisted (or an older state's bare ready-at time), return the run."""
        if isinstance(value, (int, float)):
            return cls(float(value), float(value))
        return cls(**value)


@dataclass(frozen=True)
class TriggerOptions:
    force: bool = False
    chunking_config: dict[str, Any] | None = None


def feature_status(runs: Mapping[str, FeatureRun], name: str, now: float) -> str:
    """Given a video's runs, a feature and the time, return the feature's status."""
    run = runs.get(name)
    if run is not None:
        return run.status(now)
    if any(
        feature_status(runs, d, now) in ("failed", "blocked") for d in FEATURE_DEPENDENCIES[name]
    ):
        return "blocked"
    return "none"


def features_map(runs: Mapping[str, FeatureRun], now: float) -> dict[str, str]:
    """Given a video's runs and the time, return the `features` map of Get Video."""
    return {name: run.status(now) for name, run in runs.items()}


def required_for(desired: list[str]) -> list[str]:
    """Given wanted features, return them with their dependencies, dependencies first."""
    required: list[str] = []

    def need(feature: str) -> None:
        for dep in FEATURE_DEPENDENCIES[feature]:
            need(dep)
        if feature not in required:
            required.append(feature)

    for feature in desired:
        need(feature)
    return required


def plan_json(
    video_id: str, runs: Mapping[str, FeatureRun], desired: Any, uploaded: bool, now: float
) -> dict[str, Any]:
    """Given a video's runs, the `desired` of a plan request, whether the video is
    uploaded and the time, return the plan. Raise StoreError if `desired` is not a
    list of known feature names.
    """
    if not isinstance(desired, list) or any(
        not isinstance(d, str) or d not in FEATURES for d in desired
    ):
        raise StoreError(
            400,
            "validation_error",
            f"desired must be a list of feature names among {', '.join(FEATURES)}",
            "desired",
        )
    required = required_for(desired)
    statuses = {f: feature_status(runs, f, now) for f in required}
    actionable = [
        f
        for f in required
        if uploaded
        and statuses[f] == "none"
        and all(statuses[d] == "ready" for d in FEATURE_DEPENDENCIES[f])
    ]
    return {
        "video_id": video_id,
        "all_required": required,
        "statuses": statuses,
        "actionable": actionable,
        "blocked": [f for f in required if statuses[f] == "blocked"],
        "done": all(s == "ready" for s in statuses.values()),
    }


def catalog_json() -> dict[str, Any]:
    """Return the feature catalog as Get Feature Catalog answers it."""
    return {
        "features": [
            {
                "name": f.name,
                "description": f.description,
                "depends_on": list(f.depends_on),
                "produces": list(f.produces),
            }
            for f in FEATURES.values()
        ]
    }


def trigger_options(feature: str, body: dict[str, Any]) -> TriggerOptions:
    """Given a feature and its trigger's JSON body, return the options it asks for.

    Raise StoreError (422) if a documented field has the wrong type. Undocumented
    fields are ignored, as the API's schema validation does.
    """
    booleans = ["force"]
    if feature in ("transcript", "captions"):
        booleans.append("force_feature_queue")
    for key in booleans:
        if key in body and not isinstance(body[key], bool):
            raise StoreError(422, "validation_error", f"{key} must be a boolean", key)
    if feature == "captions" and not isinstance(body.get("caption_prompt", ""), (str, type(None))):
        raise StoreError(
            422, "validation_error", "caption_prompt must be a string or null", "caption_prompt"
        )
    chunking = body.get("chunking_config") if feature == "transcript" else None
    if "chunking_config" in body and feature == "transcript":
        if not isinstance(chunking, dict):
            raise StoreError(
                422, "validation_error", "chunking_config must be an object", "chunking_config"
            )
        if not isinstance(chunking.get("use_scene_detection", False), bool):
            raise StoreError(
                422,
                "validation_error",
                "chunking_config.use_scene_detection must be a boolean",
                "chunking_config",
            )
    return TriggerOptions(bool(body.get("force", False)), chunking)


def trigger(
    runs: dict[str, FeatureRun],
    feature: str,
    force: bool,
    upload_status: str,
    now: float,
    delay: float,
    draw_failure: Callable[[], bool],
    note: dict[str, Any],
) -> tuple[int, str]:
    """Given a video's runs (changed in place), a feature, `force`, the video's upload
    status, the time, the delay of a new run and a draw of whether it fails, return
    the HTTP status and the feature status to answer.

    A feature pending, processing, ready or failed is left alone without `force`
    (200 with its status); otherwise a new run starts (202 "pending"). `note` gets
    the feature's status before the trigger ("was"), its dependencies' statuses
    ("depends_on") and whether a run started ("started"). Raise StoreError if the
    video is not uploaded or a dependency is not ready.
    """
    was = feature_status(runs, feature, now)
    deps = {d: feature_status(runs, d, now) for d in FEATURE_DEPENDENCIES[feature]}
    note.update(was=was, depends_on=deps, started=False)
    if upload_status != "uploaded":
        raise StoreError(
            400,
            "validation_error",
            f"video is not uploaded yet (status {upload_status}): features need an uploaded video",
            "video_id",
        )
    if not force and was in (*IN_HAND, "failed"):
        return 200, was
    missing = {d: s for d, s in deps.items() if s != "ready"}
    if missing:
        states = ", ".join(f"{d} is {s}" for d, s in missing.items())
        raise StoreError(
            400,
            "validation_error",
            f"feature {feature} needs {', '.join(missing)} to be ready first ({states})",
            "feature",
        )
    previous = runs.get(feature)
    runs[feature] = FeatureRun(
        now, now + delay, draw_failure(), previous.runs + 1 if previous else 1
    )
    note["started"] = True
    return 202, "pending"
