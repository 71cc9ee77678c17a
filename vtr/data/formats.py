"""Which file names are videos: the one list used to walk folders for indexing and to find dataset videos."""

from __future__ import annotations

# Without dots, lower case, in order of preference (dataset discovery takes the first match of a video id).
VIDEO_EXTENSIONS: tuple[str, ...] = (
    "mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "wmv", "flv", "3gp", "ogv", "ts",
)  # fmt: skip
