"""Where an export writes, as a comparable place: no two exports (and no export and the deployment's own
exports) may write the same folder, bucket prefix or Postgres table, or one inside the other."""

from __future__ import annotations

import posixpath
from urllib.parse import parse_qsl, unquote, urlparse

Place = tuple[str, ...]


def destination_place(url: str) -> Place | None:
    """`(kind, root..., path parts...)` of a destination; `None` when the URL cannot be read (reported elsewhere).

    `file://` paths are normalized (`/tmp/../etc` is `/etc`); a Postgres table without a schema is in
    `public`; the host and database are part of the place, the user is not.
    """
    parsed = urlparse(url.strip())
    if parsed.scheme == "file":
        path = posixpath.normpath(unquote(parsed.path))
        return ("file", *[part for part in path.split("/") if part])
    if parsed.scheme in ("s3", "gs"):
        return (parsed.scheme, parsed.netloc.lower(), *[part for part in parsed.path.split("/") if part])
    if parsed.scheme in ("postgresql", "postgres"):
        table = dict(parse_qsl(parsed.query)).get("table", "")
        schema, _, name = table.rpartition(".")
        try:
            port = parsed.port or 5432
        except ValueError:
            return None
        host = (parsed.hostname or "").lower()
        return ("postgresql", host, str(port), parsed.path.strip("/"), schema or "public", name, "")
    return None


def overlaps(first: Place, second: Place) -> bool:
    """One place is the other or lies inside it."""
    shorter, longer = sorted((first, second), key=len)
    return longer[: len(shorter)] == shorter


def overlap_problems(exports: list[tuple[str, str]], deployment: list[tuple[str, str]]) -> list[str]:
    """A problem for every export (`(label, url)`) whose destination overlaps another's or the deployment's."""
    places = [(label, destination_place(url)) for label, url in exports]
    fixed = [(label, destination_place(url)) for label, url in deployment]
    problems: list[str] = []
    for index, (label, place) in enumerate(places):
        if place is None:
            continue
        for other_label, other in fixed:
            if other is not None and overlaps(place, other):
                problems.append(
                    f"{label}.destination: overlaps {other_label} (the deployment's exports); write elsewhere"
                )
        for other_label, other in places[:index]:
            if other is not None and overlaps(place, other):
                problems.append(
                    f"{label}.destination: overlaps the destination of {other_label}; each export needs its own"
                )
    return problems
