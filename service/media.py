"""Stored images: where they go under `MEDIA_DIR`, atomic writes, and safe look-ups."""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path

URL_PREFIX = "/media/"
# The only names the service writes: <project uuid>/<shot>-<job id>.<ext>. Look-ups must match
# too, so no request path (`..`, absolute, encoded tricks) can reach outside MEDIA_DIR.
_RELATIVE_PATH = re.compile(r"^[0-9a-f-]{36}/[0-9]{1,4}-[0-9]{1,19}\.(png|jpg|gif|webp|bin)$")
_FILE_NAME = re.compile(r"(?P<shot>[0-9]{1,4})-(?P<job>[0-9]{1,19})\.(png|jpg|gif|webp|bin)")


def relative_path(project_id: uuid.UUID, shot_number: int, job_id: int, extension: str) -> str:
    """The path of an image under MEDIA_DIR (also the tail of its URL)."""
    return f"{project_id}/{shot_number}-{job_id}.{extension}"


def is_media_path(relative: str) -> bool:
    """Whether `relative` is a name this service writes under MEDIA_DIR."""
    return _RELATIVE_PATH.match(relative) is not None


def url_for(relative: str) -> str:
    """The URL path the API serves `relative` at."""
    return URL_PREFIX + relative


def write_atomically(media_dir: Path, relative: str, data: bytes) -> Path:
    """Write `data` to `media_dir/relative` so readers see either nothing or the whole file.

    A temporary file in the same directory is written, flushed to disk, then renamed over the
    target: a crash mid-write leaves a stray temporary file, never a truncated image.
    """
    if not _RELATIVE_PATH.match(relative):
        raise ValueError(f"not a media path this service writes: {relative!r}")
    target = media_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def delete_superseded(
    media_dir: Path, project_id: uuid.UUID, shot_number: int, job_id: int
) -> list[str]:
    """Delete the shot's images written by jobs older than `job_id`; return their paths.

    Called once the image of `job_id` is the shot's stored one, so old URLs stop answering.
    Only older jobs' files: job ids grow, and a newer job's file may be written right now,
    before its own storyboard write.
    """
    directory = media_dir / str(project_id)
    deleted: list[str] = []
    if not directory.is_dir():
        return deleted
    for path in directory.glob(f"{shot_number}-*"):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None or int(match["shot"]) != shot_number or int(match["job"]) >= job_id:
            continue
        path.unlink(missing_ok=True)
        deleted.append(f"{project_id}/{path.name}")
    return deleted


def resolve(media_dir: Path, relative: str) -> Path | None:
    """The file for a request path under /media/, or None when it is not one of ours."""
    if not _RELATIVE_PATH.match(relative):
        return None
    root = media_dir.resolve()
    path = (root / relative).resolve()
    # Belt and braces after the pattern: a symlink planted under MEDIA_DIR must not lead out.
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path
