"""The marker in a video's description, the streamed listing, and reconcile's plan (pure)."""

from __future__ import annotations

import os

import pytest

from reka_sync.api.replies import StreamedListing
from reka_sync.config import parse_duration
from reka_sync.deletions import may_delete
from reka_sync.errors import BadReply
from reka_sync.markers import Marker, default_instance, parse, render
from reka_sync.recovery import Done, Found, Remote, plan
from reka_sync.stability import FileStat

DIGEST = "xxh3-128:" + "ab" * 16


def marker(
    key: str = "k1", instance: str = "nas", rel: str = "cams/a.mp4", digest: str = DIGEST
) -> Marker:
    return Marker(key, instance, 10, 20, digest, rel)


def test_a_marker_round_trips_any_file_name_and_old_markers_still_parse() -> None:
    odd = os.fsdecode(b"cams/fr\xffont/a b] [reka-sync:zz].mp4")
    written = marker(rel=odd)
    assert parse(render(written)) == written  # the last marker counts, not one in the name
    assert parse("holiday.mp4 [reka-sync:0123abcd]") == Marker("0123abcd")
    assert parse("a holiday clip") is None and parse(None) is None
    assert not Marker("k").complete and written.complete
    assert default_instance("My Host!.local") == "My-Host-.local"


def test_a_listing_streams_its_results_and_refuses_what_is_not_a_listing() -> None:
    body = b'{"results": [{"video_id": "a"}, {"video_id": "b"}], "next_page_token": "p2"}'
    listing = StreamedListing("GET /v2/videos")
    got = [item for i in range(0, len(body), 5) for item in listing.feed(body[i : i + 5])]
    assert [g["video_id"] for g in got] == ["a", "b"] and listing.close() == "p2"
    empty = StreamedListing("GET /v2/videos")
    assert empty.feed(b'{"results": []}') == [] and empty.close() is None
    for wrong in (b"{}", b'{"results": null}', b"[]", b'{"error": {"type": "x"}}', b'{"res'):
        listing = StreamedListing("GET /v2/videos")
        with pytest.raises(BadReply):
            listing.feed(wrong)
            listing.close()


def test_the_plan_keeps_the_journals_video_and_never_touches_foreign_ones() -> None:
    here = Found("/media", "/media/cams/a.mp4", FileStat(10, 20, 1, 1))
    remotes = [
        Remote("v-extra", "uploaded", None, marker("k2")),  # same content, unknown: extra
        Remote("v-known", "uploaded", None, marker("k1")),  # the journal's: kept
        Remote("v-adopt", "uploaded", None, marker("k3", rel="cams/b.mp4", digest="d-b")),
        Remote("v-orphan", "uploaded", None, marker("k4", rel="gone/c.mp4", digest="d-c")),
        Remote("v-other", "uploaded", None, marker("k5", instance="other-host")),
        Remote("v-old", "uploaded", None, Marker("unknown-key")),  # old marker, key unknown
        Remote("v-plain", "uploaded", None, None),
    ]

    def find(m: Marker) -> Found | None:
        return (
            Found("/media", f"/media/{m.rel_path}", here.stat)
            if "cams" in (m.rel_path or "")
            else None
        )

    done = [Done(1, "/media/cams/a.mp4", "v-known"), Done(2, "/media/cams/z.mp4", "v-lost")]
    result = plan(remotes, "nas", {"v-known"}, {"k1"}, done, find)
    assert [(k.video_id, [e.video_id for e in extras]) for k, extras in result.duplicates] == [
        ("v-known", ["v-extra"])
    ]
    assert [a.remote.video_id for a in result.adopted] == ["v-adopt"]
    assert [o.video_id for o in result.orphans] == ["v-orphan"]
    assert result.foreign == 3 and result.known == 1
    assert [m.video_id for m in result.missing] == ["v-lost"]


def test_durations_and_the_deletion_cap() -> None:
    assert parse_duration("6h") == 21600 and parse_duration("90") == 90
    assert parse_duration("nan") is None and parse_duration("soon") is None
    assert may_delete(49, 50) and not may_delete(50, 50) and may_delete(10_000, 0)
