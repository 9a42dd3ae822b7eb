"""URL lists: videos the API fetches itself (`reka-sync add-url`, `backfill --urls`).

A URL is a journal row like a file's, keyed by the URL, under the pseudo-root
``URL_ROOT`` (never walked, never settled: it is queued at once). It goes through the
same claim, send record, marker, reconcile-before-resend, status poll, filing and
indexing as a file; only its send differs (``video_url`` instead of the bytes). The
same URL added twice is one row: it is uploaded once.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from xxhash import xxh3_64

URL_ROOT = "urls:"


@dataclass(frozen=True)
class UrlItem:
    """One URL to upload, with the name and group it was given (None: from the rules)."""

    url: str
    name: str | None = None
    group: str | None = None


def is_url_root(root: str) -> bool:
    """Given a job's root, return True if the job is a URL's."""
    return root == URL_ROOT


def url_sample(url: str) -> str:
    """Given a URL, return what stands for a file's sample hash: one per URL, so no two
    URLs are ever taken for twins."""
    return f"url:{xxh3_64(url.encode()).hexdigest()}"


def name_of(item: UrlItem) -> str:
    """Given a URL item, return the name its video gets (and its rules match): the one
    given, else the last part of the URL's path, else its host."""
    if item.name:
        return item.name
    parts = urlsplit(item.url)
    return parts.path.rstrip("/").rsplit("/", 1)[-1] or parts.hostname or item.url


def check_url(url: str) -> str | None:
    """Given a URL, return why it cannot be uploaded (None: it can)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL"
    return None


def parse_list(text: str) -> tuple[list[UrlItem], list[str]]:
    """Given a URL list (one URL per line, optionally a tab, a name, a tab, a group; blank
    lines and lines starting with # skipped), return the items and the problems, each
    with its line number."""
    items: list[UrlItem] = []
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        url, name, group = [*line.split("\t"), "", ""][:3]
        why = check_url(url.strip())
        if why:
            problems.append(f"line {number}: {url.strip()!r}: {why}")
            continue
        items.append(UrlItem(url.strip(), name.strip() or None, group.strip() or None))
    return items, problems
