"""Caption cleaning of the official UMT/VINDLU code (``pre_text``)."""

from __future__ import annotations

import re

_DELETE = re.compile(r"[,.'!?\"()*#:;~]")
_MULTI_SPACE = re.compile(r"\s{2,}")


def pre_text(caption: str, max_words: int | None = None) -> str:
    """Clean a caption as the official ``pre_text`` does.

    Lowercase; delete ``, . ' ! ? " ( ) * # : ; ~``; ``-`` and ``/`` become spaces; ``<person>`` becomes
    ``person``; runs of two or more whitespace characters become one space (a lone tab or newline is
    kept, as in the original); trailing newlines and surrounding spaces are stripped. With ``max_words``
    only the first ``max_words`` space-separated words are kept.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    text = caption.lower().replace("<person>", "person")
    text = _DELETE.sub("", text)
    text = text.replace("-", " ").replace("/", " ")
    text = _MULTI_SPACE.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    if max_words:
        words = text.split(" ")
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    return text
