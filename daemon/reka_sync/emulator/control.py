"""The emulator's control endpoint (``/_emulator/...``, no key): for tests and curious users.

* ``GET /_emulator/videos``: every video of every key, with what arrived (size,
  digest, description), its ``feature_runs`` per feature and the last
  ``chunking_config`` a transcript trigger sent
* ``GET /_emulator/faults``: the faults in force, ``processing_delay`` and ``feature_delay``
* ``POST /_emulator/faults``: ``{"faults": [...], "seed": N, "processing_delay": S,
  "feature_delay": S}`` replaces the faults (see faults.py); each delay is optional
* ``GET /_emulator/requests``: the request log; a feature trigger's entry also has
  ``feature``, ``force``, ``was`` (its status before), ``depends_on`` (their statuses)
  and ``started`` (whether a run started)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reka_sync.emulator.errors import StoreError
from reka_sync.emulator.faults import Fault
from reka_sync.emulator.shapes import record_json

if TYPE_CHECKING:
    from reka_sync.emulator.server import EmulatorServer, Handler

DELAYS = ("processing_delay", "feature_delay")


def answer(handler: Handler, method: str, path: str) -> None:
    """Given a control request, answer it. Raise StoreError if it is unknown or invalid."""
    server = handler.server
    if (method, path) == ("GET", "/_emulator/videos"):
        videos = [record_json(v, server.now()) for v in server.store.all_videos()]
        handler._send(200, {"results": videos})
    elif (method, path) == ("GET", "/_emulator/faults"):
        handler._send(200, {"faults": server.faults.describe(), **delays(server)})
    elif (method, path) == ("POST", "/_emulator/faults"):
        data = handler._json_body()
        try:
            faults = [Fault.from_json(f) for f in data.get("faults", [])]
        except (ValueError, TypeError) as exc:
            raise StoreError(400, "validation_error", str(exc), "faults") from None
        changed = {k: data[k] for k in DELAYS if k in data}
        for key, value in changed.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise StoreError(400, "validation_error", f"{key} must be seconds >= 0", key)
        server.faults.replace(faults, data.get("seed"))
        for key, value in changed.items():
            setattr(server.settings, key, float(value))
        handler._send(200, {"faults": server.faults.describe(), **delays(server)})
    elif (method, path) == ("GET", "/_emulator/requests"):
        with server.log_lock:
            entries = list(server.request_log)
        handler._send(200, {"results": entries})
    else:
        raise StoreError(404, "not_found_error", f"no control endpoint {method} {path}")


def delays(server: EmulatorServer) -> dict[str, Any]:
    """Given the server, return its delays as the control endpoint reports them."""
    return {key: getattr(server.settings, key) for key in DELAYS}
