"""vtr-shapes: a small synthetic video world for the demo, the tests and the quality benchmarks.

Each clip shows one or two coloured shapes on a textured background doing something over time
(moving, growing or shrinking, appearing or disappearing, changing colour, or two such events one
after the other). Captions are drawn from paraphrase templates. The test split holds *temporal hard
negatives*: every test clip (by default) has a partner with the same objects and background whose
frames are the original's frames played backwards (single events) or with its two event segments
swapped (two-event clips). Both clips share a ``temporal_group``; a model that ignores frame order
sees the two as the same bag of frames and cannot beat chance between them. Some (shape, colour)
combinations are held out of the training split and only occur in test (``heldout_combo``).

Layout written by :func:`generate_world`::

    OUT/videos/*.mp4     H.264, 64-224 px (even), 8-32 frames
    OUT/train.json       [{"video": "train_00000.mp4", "caption": [2-3 paraphrases], ...}, ...]
    OUT/test.json        [{"video": "test_00000.mp4", "caption": "one caption", ...}, ...]
    OUT/world.json       the summary (seed, counts, generator version, held-out combinations)

Annotation records hold the official keys ``video`` (relative to ``OUT/videos``) and ``caption`` plus
``events`` (in temporal order: action, shape, color, direction or to_color, and ``frames`` = [start,
end) of the event's segment), ``distractor`` (a static {shape, color} or null), ``background`` (the
texture), ``num_frames``, ``height``, ``width``, ``fps``, ``duration`` (seconds), ``temporal_group``
(shared by a clip and its partner, null otherwise), ``temporal_role`` (``original``, ``reversed``,
``swapped`` or null) and ``heldout_combo`` (the clip shows a (shape, colour) never seen in train).
:func:`parse_caption` maps any generated caption back to its :class:`Event` list, which equals
:func:`events_of` of the record.

A two-event clip is two "shots" on one background: the first object acts alone, then the second
object acts alone, so that swapping the shots gives a consistent clip with exactly the same frames.

Determinism: the annotation JSON files and world.json depend only on the arguments. Frames are
rendered from per-clip seeds derived from ``(seed, split, index)``, so decoded frames and mp4 bytes are
identical between runs on one machine, with or without worker processes. libx264 output depends on
its thread count, which :func:`vtr.data.video_writer.write_video` leaves at the default (derived
from the number of CPUs), so mp4 bytes (and, within codec tolerance, decoded pixels) may differ
between machines with different core counts.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vtr.data.video_writer import write_video
from vtr.errors import ConfigError

GENERATOR_VERSION = "vtr-shapes/1"

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 90, 235),
    "yellow": (245, 215, 40),
    "purple": (155, 70, 205),
    "orange": (250, 140, 30),
    "white": (240, 240, 240),
}
ACTIONS: tuple[str, ...] = ("move", "grow", "shrink", "appear", "disappear", "recolor")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
TEXTURES: tuple[str, ...] = ("noise", "stripes", "checker", "dots", "waves")

MIN_SIZE, MAX_SIZE = 64, 224
MIN_FRAMES, MAX_FRAMES = 8, 32

_OPPOSITE_DIRECTION = {"left": "right", "right": "left", "up": "down", "down": "up"}
_OPPOSITE_ACTION = {"grow": "shrink", "shrink": "grow", "appear": "disappear", "disappear": "appear"}

# --------------------------------------------------------------------------------------------------
# Structured events and captions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing that happens to one object.

    ``color`` is the object's colour when the event starts; ``direction`` is set for ``move`` only and
    ``to_color`` for ``recolor`` only.
    """

    action: str
    shape: str
    color: str
    direction: str | None = None
    to_color: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if self.shape not in SHAPES or self.color not in COLORS:
            raise ValueError(f"unknown shape or colour: {self.shape!r} {self.color!r}")
        if (self.action == "move") != (self.direction is not None):
            raise ValueError("direction is required for move and only for move")
        if (self.action == "recolor") != (self.to_color is not None):
            raise ValueError("to_color is required for recolor and only for recolor")
        if self.to_color is not None and (self.to_color not in COLORS or self.to_color == self.color):
            raise ValueError(f"bad to_color {self.to_color!r}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")

    def reversed(self) -> Event:
        """The event seen with time running backwards (left<->right, grow<->shrink, red->blue => blue->red)."""
        if self.action == "move":
            return Event("move", self.shape, self.color, direction=_OPPOSITE_DIRECTION[self.direction or ""])
        if self.action == "recolor":
            return Event("recolor", self.shape, self.to_color or "", to_color=self.color)
        return Event(_OPPOSITE_ACTION[self.action], self.shape, self.color)

    def combos(self) -> set[tuple[str, str]]:
        """The (shape, colour) combinations shown during the event."""
        out = {(self.shape, self.color)}
        if self.to_color is not None:
            out.add((self.shape, self.to_color))
        return out

    def to_dict(self) -> dict[str, str]:
        """JSON form: action, shape, color, plus direction or to_color where relevant."""
        d = {"action": self.action, "shape": self.shape, "color": self.color}
        if self.direction is not None:
            d["direction"] = self.direction
        if self.to_color is not None:
            d["to_color"] = self.to_color
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        """Inverse of :meth:`to_dict`."""
        return cls(d["action"], d["shape"], d["color"], d.get("direction"), d.get("to_color"))


def events_of(record: dict[str, Any]) -> list[Event]:
    """The events (in temporal order) of an annotation record written by :func:`generate_world`."""
    return [Event.from_dict(e) for e in record["events"]]


# Verb phrases. Lists of opposite events are parallel, so a temporal partner keeps the same phrasing.
_MOVE_PHRASES = {
    "left": ("moves left", "slides to the left", "travels leftward", "goes to the left", "drifts left",
             "glides leftward"),
    "right": ("moves right", "slides to the right", "travels rightward", "goes to the right", "drifts right",
              "glides rightward"),
    "up": ("moves up", "slides upward", "travels upward", "goes up", "rises", "floats upward"),
    "down": ("moves down", "slides downward", "travels downward", "goes down", "falls", "sinks downward"),
}
_ACTION_PHRASES = {
    "grow": ("grows", "gets bigger", "expands", "becomes larger", "increases in size", "grows larger"),
    "shrink": ("shrinks", "gets smaller", "contracts", "becomes smaller", "decreases in size", "shrinks down"),
    "appear": ("appears", "fades in", "shows up", "comes into view", "pops into view", "materializes"),
    "disappear": ("disappears", "fades out", "vanishes", "goes out of view", "fades away", "drops out of view"),
}
# Recolor forms: (whether the noun phrase names the first colour, verb phrase with {c1}/{c2}).
_RECOLOR_FORMS = (
    (False, "changes from {c1} to {c2}"),
    (False, "turns from {c1} to {c2}"),
    (True, "turns {c2}"),
    (False, "switches color from {c1} to {c2}"),
    (True, "changes color to {c2}"),
    (False, "goes from {c1} to {c2}"),
)
_SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
_TEXTURE_WORDS = {
    "noise": ("noisy", "grainy"),
    "stripes": ("striped",),
    "checker": ("checkered", "checkerboard"),
    "dots": ("dotted", "polka dot"),
    "waves": ("wavy",),
}
_BACKGROUND_NOUNS = ("background", "backdrop")
_SINGLE_TEMPLATES = (
    "{np} {vp}",
    "{np} {vp} on {bg}",
    "on {bg} {np} {vp}",
    "there is {np} that {vp}",
    "in this clip {np} {vp}",
    "we see {np} that {vp}",
    "a video of {np} that {vp}",
    "{np} {vp} in front of {bg}",
)
_DISTRACTOR_TEMPLATES = (
    " while {dnp} stays still",
    " next to {dnp}",
    " and {dnp} does not move",
    " beside {dnp} that stays in place",
)
# {a} and {b} are the first and second event clauses in time.
_DOUBLE_TEMPLATES = (
    "{a} then {b}",
    "{a} and then {b}",
    "first {a} and then {b}",
    "{a} and afterwards {b}",
    "after {a} {b}",
    "{b} after {a}",
    "{a} before {b}",
    "before {b} {a}",
    "on {bg} {a} and then {b}",
    "{a} and after that {b}",
)


@dataclass(frozen=True)
class CaptionStyle:
    """Paraphrase choices for one caption; every index is taken modulo the number of options."""

    template: int = 0
    verbs: tuple[int, ...] = (0, 0)
    nouns: tuple[int, ...] = (0, 0, 0)
    distractor: int = 0
    texture: int = 0
    background: int = 0

    @classmethod
    def sample(cls, rng: np.random.Generator) -> CaptionStyle:
        """A random style (indices are drawn wide and reduced modulo the option counts)."""
        v = rng.integers(0, 720720, size=8)
        return cls(int(v[0]), (int(v[1]), int(v[2])), (int(v[3]), int(v[4]), int(v[5])), int(v[6]),
                   int(v[7]) % 2, int(v[7]) // 2)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(shape: str, color: str | None, noun_index: int) -> str:
    words = _SHAPE_WORDS[shape]
    noun = words[noun_index % len(words)]
    head = f"{color} {noun}" if color else noun
    return f"{_article(head)} {head}"


def _clause(event: Event, verb_index: int, noun_index: int) -> tuple[str, str]:
    """(noun phrase, verb phrase) describing ``event``."""
    if event.action == "move":
        phrases = _MOVE_PHRASES[event.direction or ""]
        return _noun_phrase(event.shape, event.color, noun_index), phrases[verb_index % len(phrases)]
    if event.action == "recolor":
        named, vp = _RECOLOR_FORMS[verb_index % len(_RECOLOR_FORMS)]
        np_ = _noun_phrase(event.shape, event.color if named else None, noun_index)
        return np_, vp.format(c1=event.color, c2=event.to_color)
    phrases = _ACTION_PHRASES[event.action]
    return _noun_phrase(event.shape, event.color, noun_index), phrases[verb_index % len(phrases)]


def make_caption(
    events: Sequence[Event],
    style: CaptionStyle = CaptionStyle(),
    distractor: tuple[str, str] | None = None,
    texture: str | None = None,
) -> str:
    """Describe one or two events (in temporal order) as a plain lowercase sentence.

    ``distractor`` is a static (shape, colour) shown next to a single event; ``texture`` names the
    background for templates that mention it. The result only holds ``[a-z ]`` so caption cleaning
    leaves it unchanged.
    """
    bg = ""
    if texture is not None:
        words = _TEXTURE_WORDS[texture]
        bg = f"a {words[style.texture % len(words)]} {_BACKGROUND_NOUNS[style.background % 2]}"
    if len(events) == 1:
        np_, vp = _clause(events[0], style.verbs[0], style.nouns[0])
        templates = _SINGLE_TEMPLATES
        if texture is None:
            templates = tuple(t for t in templates if "{bg}" not in t)
        text = templates[style.template % len(templates)].format(np=np_, vp=vp, bg=bg)
        if distractor is not None:
            dnp = _noun_phrase(distractor[0], distractor[1], style.nouns[2])
            text += _DISTRACTOR_TEMPLATES[style.distractor % len(_DISTRACTOR_TEMPLATES)].format(dnp=dnp)
        return text
    if len(events) == 2:
        a = " ".join(_clause(events[0], style.verbs[0], style.nouns[0]))
        b = " ".join(_clause(events[1], style.verbs[1], style.nouns[1]))
        templates = _DOUBLE_TEMPLATES
        if texture is None:
            templates = tuple(t for t in templates if "{bg}" not in t)
        return templates[style.template % len(templates)].format(a=a, b=b, bg=bg)
    raise ValueError(f"a caption describes one or two events, got {len(events)}")


def _alternation(options: Sequence[str]) -> str:
    return "|".join(re.escape(o) for o in sorted(set(options), key=len, reverse=True))


_COLOR_RE = _alternation(list(COLORS))
_SHAPE_BY_WORD = {w: s for s, ws in _SHAPE_WORDS.items() for w in ws}


def _verb_patterns() -> list[tuple[re.Pattern[str], str, str | None, bool]]:
    """(full-match regex on the verb phrase, action, direction, noun phrase names first colour)."""
    out: list[tuple[re.Pattern[str], str, str | None, bool]] = []
    for direction, phrases in _MOVE_PHRASES.items():
        out += [(re.compile(re.escape(p)), "move", direction, True) for p in phrases]
    for action, phrases in _ACTION_PHRASES.items():
        out += [(re.compile(re.escape(p)), action, None, True) for p in phrases]
    for named, vp in _RECOLOR_FORMS:
        pattern = re.escape(vp).replace(r"\{c1\}", f"(?P<c1>{_COLOR_RE})").replace(
            r"\{c2\}", f"(?P<c2>{_COLOR_RE})"
        )
        out.append((re.compile(pattern), "recolor", None, named))
    return out


_VERB_PATTERNS = _verb_patterns()
_VP_RE = "|".join(
    sorted((p.pattern.replace("?P<c1>", "?:").replace("?P<c2>", "?:") for p, *_ in _VERB_PATTERNS),
           key=len, reverse=True)
)
_CLAUSE_RE = re.compile(
    rf"(?<![a-z])an? (?:(?P<color>{_COLOR_RE}) )?(?P<noun>{_alternation(list(_SHAPE_BY_WORD))})"
    rf"(?: that)? (?P<vp>{_VP_RE})(?![a-z])"
)


def parse_caption(text: str) -> list[Event]:
    """Recover the events (in temporal order) from a caption made by :func:`make_caption`.

    Static distractors and the background are ignored. Raises ``ValueError`` if the text is not one
    of the generator's captions.
    """
    events: list[Event] = []
    for m in _CLAUSE_RE.finditer(text):
        shape = _SHAPE_BY_WORD[m.group("noun")]
        for pattern, action, direction, named in _VERB_PATTERNS:
            vm = pattern.fullmatch(m.group("vp"))
            if vm is None or named != (m.group("color") is not None):
                continue
            if action == "recolor":
                c1 = m.group("color") if named else vm.group("c1")
                events.append(Event("recolor", shape, c1, to_color=vm.group("c2")))
            else:
                events.append(Event(action, shape, m.group("color"), direction=direction))
            break
        else:
            raise ValueError(f"cannot parse clause {m.group(0)!r} in {text!r}")
    if not events or len(events) > 2:
        raise ValueError(f"expected one or two events in {text!r}, found {len(events)}")
    if len(events) == 2 and (text.startswith("before ") or re.search(r".+ after (?!that )", text)):
        events.reverse()
    return events


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@dataclass
class _Track:
    """One object's per-frame state within a segment."""

    shape: str
    cx: np.ndarray
    cy: np.ndarray
    r: np.ndarray
    alpha: np.ndarray
    rgb: np.ndarray  # [n, 3]


@dataclass
class _ClipPlan:
    """Everything needed to render a clip (picklable, sent to the workers)."""

    height: int
    width: int
    fps: float
    texture: str
    texture_seed: int
    segments: list[list[_Track]]
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (path, "forward" | "reverse" | "swap")


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / cell
    x = np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _background(texture: str, seed: int, h: int, w: int) -> np.ndarray:
    """A static textured background, float32 [H, W, 3], dim and desaturated so shapes stand out."""
    rng = np.random.default_rng(seed)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    if texture == "noise":
        m = 0.7 * _smooth_noise(rng, h, w, int(rng.integers(6, 20))) + 0.3 * rng.random((h, w), dtype=np.float32)
    elif texture == "stripes":
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 20)
        s = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
        m = np.clip(2.5 * s, -1, 1) * 0.5 + 0.5
    elif texture == "checker":
        cell = int(rng.integers(6, 25))
        oy, ox = rng.integers(0, cell, size=2)
        m = (((yy + oy) // cell + (xx + ox) // cell) % 2).astype(np.float32)
    elif texture == "dots":
        spacing = float(rng.integers(8, 21))
        rad = spacing * rng.uniform(0.18, 0.32)
        dy = (yy + rng.uniform(0, spacing)) % spacing - spacing / 2
        dx = (xx + rng.uniform(0, spacing)) % spacing - spacing / 2
        m = np.clip(rad - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1)
    elif texture == "waves":
        period = rng.uniform(8, 22)
        amp, wavelength = rng.uniform(3, 10), rng.uniform(20, 60)
        s = np.sin(2 * np.pi * (yy + amp * np.sin(2 * np.pi * xx / wavelength)) / period)
        m = 0.5 + 0.5 * s
    else:
        raise ValueError(f"unknown texture {texture!r}")
    m = np.broadcast_to(m, (h, w)).astype(np.float32)
    low = rng.uniform(25, 75)
    high = low + rng.uniform(30, 65)
    tint = 1.0 + rng.uniform(-0.2, 0.2, size=3)
    c1 = np.clip(low * tint, 0, 255).astype(np.float32)
    c2 = np.clip(high * tint[::-1], 0, 255).astype(np.float32)
    return c1 + m[..., None] * (c2 - c1)


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance in pixels (positive inside) of a shape of nominal radius ``r``."""
    if shape == "circle":
        return r - np.sqrt(dx * dx + dy * dy)
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "square":
        return 0.85 * r - np.maximum(ax, ay)
    if shape == "diamond":
        return (1.15 * r - (ax + ay)) * np.float32(1 / math.sqrt(2))
    if shape == "triangle":  # upward equilateral, circumradius 1.2 r, centred on its centroid
        inr = 0.6 * r
        d1 = inr - dy
        d2 = inr - (-0.8660254 * dx - 0.5 * dy)
        d3 = inr - (0.8660254 * dx - 0.5 * dy)
        return np.minimum(np.minimum(d1, d2), d3)
    if shape == "cross":
        arm, half = 1.05 * r, 0.35 * r
        return np.maximum(np.minimum(arm - ax, half - ay), np.minimum(half - ax, arm - ay))
    raise ValueError(f"unknown shape {shape!r}")


def _render_segment(bg: np.ndarray, tracks: Sequence[_Track]) -> np.ndarray:
    """Composite ``tracks`` over ``bg``: float32 [n, H, W, 3]."""
    h, w, _ = bg.shape
    n = len(tracks[0].cx)
    frames = np.broadcast_to(bg, (n, h, w, 3)).copy()
    ys = np.arange(h, dtype=np.float32) + 0.5
    xs = np.arange(w, dtype=np.float32) + 0.5
    for tr in tracks:
        dx = xs[None, None, :] - tr.cx.astype(np.float32)[:, None, None]
        dy = ys[None, :, None] - tr.cy.astype(np.float32)[:, None, None]
        r = tr.r.astype(np.float32)[:, None, None]
        cover = np.clip(_signed_distance(tr.shape, dx, dy, r) + 0.5, 0.0, 1.0)
        cover *= tr.alpha.astype(np.float32)[:, None, None]
        rgb = tr.rgb.astype(np.float32)[:, None, None, :]
        frames += cover[..., None] * (rgb - frames)
    return frames


def _render_job(plan: _ClipPlan) -> int:
    """Render a clip and write each requested ordering of its frames; returns the number of files."""
    bg = _background(plan.texture, plan.texture_seed, plan.height, plan.width)
    segments = [
        np.clip(np.rint(_render_segment(bg, tracks)), 0, 255).astype(np.uint8) for tracks in plan.segments
    ]
    for path, order in plan.outputs:
        if order == "forward":
            frames = np.concatenate(segments)
        elif order == "reverse":
            frames = np.concatenate(segments)[::-1]
        elif order == "swap":
            frames = np.concatenate(segments[::-1])
        else:
            raise ValueError(f"unknown frame order {order!r}")
        write_video(path, frames, fps=plan.fps)
    return len(plan.outputs)


# --------------------------------------------------------------------------------------------------
# Sampling clips
# --------------------------------------------------------------------------------------------------


def _progress_ramp(rng: np.random.Generator, n: int) -> np.ndarray:
    """0 -> 1 linearly over the segment, with a short random hold at each end."""
    h0, h1 = (int(v) for v in rng.integers(0, max(1, n // 6) + 1, size=2))
    span = max(1, n - 1 - h0 - h1)
    return np.clip((np.arange(n) - h0) / span, 0.0, 1.0)


def _jitter_rgb(rng: np.random.Generator, color: str) -> np.ndarray:
    return np.clip(np.array(COLORS[color], dtype=np.float32) + rng.uniform(-12, 12, size=3), 0, 255)


def _event_track(
    rng: np.random.Generator, event: Event, n: int, h: int, w: int
) -> tuple[_Track, np.ndarray]:
    """Render parameters for ``event`` over ``n`` frames, plus the [n, 2] centres it occupies.

    The *canonical* forward event (move right or down, grow, appear, recolor c1->c2) is sampled and the
    tracks are reversed in time for its opposite, so every event's parameter distribution is exactly the
    time reversal of its opposite's: the frame multiset carries no hint of the direction.
    """
    m = min(h, w)
    canonical = event
    backwards = event.action in ("shrink", "disappear") or event.direction in ("left", "up")
    if event.action == "recolor":  # no canonical colour order: pick the rendering direction at random
        backwards = bool(rng.random() < 0.5)
    if backwards:
        canonical = event.reversed()
    ones = np.ones(n)
    if canonical.action == "grow":
        r0 = rng.uniform(0.07, 0.10) * m
        r1 = r0 * rng.uniform(1.7, 2.3)
        r = r0 + (r1 - r0) * _progress_ramp(rng, n)
        rmax = r1
    else:
        rmax = rng.uniform(0.10, 0.16) * m
        r = rmax * ones
    margin = 1.25 * rmax + 1
    cx = rng.uniform(margin, w - margin) * ones
    cy = rng.uniform(margin, h - margin) * ones
    alpha = ones.copy()
    rgb = np.tile(_jitter_rgb(rng, canonical.color), (n, 1))
    if canonical.action == "move":
        horizontal = canonical.direction == "right"
        extent = (w if horizontal else h) - 2 * margin
        travel = extent * rng.uniform(0.45, 0.8)
        start = margin + rng.uniform(0, extent - travel)
        pos = start + travel * _progress_ramp(rng, n)
        if horizontal:
            cx = pos
        else:
            cy = pos
    elif canonical.action == "appear":
        fade = int(rng.integers(1, 4))
        k = int(rng.integers(max(1, n // 5), max(2, min(n // 2, n - fade - 2)) + 1))
        alpha = np.clip((np.arange(n) - k + 1) / fade, 0.0, 1.0)
    elif canonical.action == "recolor":
        k = int(rng.integers(max(1, n // 3), max(2, (2 * n) // 3) + 1))
        rgb[k:] = _jitter_rgb(rng, canonical.to_color or "")
    track = _Track(event.shape, cx, cy, r, alpha, rgb)
    if backwards:
        track = _Track(event.shape, cx[::-1].copy(), cy[::-1].copy(), r[::-1].copy(), alpha[::-1].copy(),
                       rgb[::-1].copy())
    return track, np.stack([track.cx, track.cy], axis=1)


@dataclass
class _Unit:
    """A sampled clip (and, in test, its temporal partner) before rendering."""

    events: list[Event]
    distractor: tuple[str, str] | None
    texture: str
    height: int
    width: int
    num_frames: int
    plan: _ClipPlan
    style_seed: int


class _ComboSampler:
    """Draws (shape, colour) pairs with or without the held-out combinations."""

    def __init__(self, heldout: set[tuple[str, str]]) -> None:
        self.heldout = heldout
        self.allowed = [(s, c) for s in SHAPES for c in COLORS if (s, c) not in heldout]

    def combo(self, rng: np.random.Generator, exclude_shapes: Sequence[str] = ()) -> tuple[str, str]:
        pool = [sc for sc in self.allowed if sc[0] not in exclude_shapes]
        return pool[int(rng.integers(len(pool)))]

    def second_color(self, rng: np.random.Generator, shape: str, color: str) -> str:
        pool = [c for c in COLORS if c != color and (shape, c) not in self.heldout]
        return pool[int(rng.integers(len(pool)))]


def _random_event(rng: np.random.Generator, shape: str, color: str, sampler: _ComboSampler) -> Event:
    family = ("move", "size", "visibility", "recolor")[int(rng.integers(4))]
    if family == "move":
        return Event("move", shape, color, direction=DIRECTIONS[int(rng.integers(4))])
    if family == "size":
        return Event(("grow", "shrink")[int(rng.integers(2))], shape, color)
    if family == "visibility":
        return Event(("appear", "disappear")[int(rng.integers(2))], shape, color)
    return Event("recolor", shape, color, to_color=sampler.second_color(rng, shape, color))


def _place_distractor(
    rng: np.random.Generator, h: int, w: int, occupied: np.ndarray, rmain: float, shape: str, color: str
) -> _Track | None:
    m = min(h, w)
    rd = rng.uniform(0.08, 0.12) * m
    margin = 1.25 * rd + 1
    for _ in range(30):
        x, y = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        if np.min(np.hypot(occupied[:, 0] - x, occupied[:, 1] - y)) > 1.25 * (rd + rmain) + 2:
            n = len(occupied)
            rgb = np.tile(_jitter_rgb(rng, color), (n, 1))
            return _Track(shape, np.full(n, x), np.full(n, y), np.full(n, rd), np.ones(n), rgb)
    return None


def _sample_size(rng: np.random.Generator) -> tuple[int, int]:
    h = 2 * int(rng.integers(MIN_SIZE // 2, MAX_SIZE // 2 + 1))
    lo = max(MIN_SIZE, int(math.ceil(0.75 * h)))
    hi = min(MAX_SIZE, int(1.8 * h))
    w = 2 * int(rng.integers((lo + 1) // 2, hi // 2 + 1))
    return h, w


def _sample_unit(
    rng: np.random.Generator,
    sampler: _ComboSampler,
    fps: float,
    two_event_fraction: float,
    distractor_fraction: float,
    heldout_combo: tuple[str, str] | None,
) -> _Unit:
    """Sample one clip; ``heldout_combo`` (test only) forces the first object's (shape, colour)."""
    h, w = _sample_size(rng)
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    texture_seed = int(rng.integers(2**31))
    style_seed = int(rng.integers(2**31))
    first = heldout_combo or sampler.combo(rng)
    distractor = None
    if rng.random() < two_event_fraction:
        n = int(rng.integers(2 * MIN_FRAMES, MAX_FRAMES + 1))
        n1 = int(rng.integers(MIN_FRAMES // 2 + 2, n - MIN_FRAMES // 2 - 2 + 1))
        second = sampler.combo(rng, exclude_shapes=(first[0],))
        events = [_random_event(rng, *first, sampler), _random_event(rng, *second, sampler)]
        if rng.random() < 0.5:  # either object may act first
            events.reverse()
        segments = [[_event_track(rng, ev, k, h, w)[0]] for ev, k in zip(events, (n1, n - n1), strict=True)]
    else:
        n = int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))
        event = _random_event(rng, *first, sampler)
        events = [event]
        track, occupied = _event_track(rng, event, n, h, w)
        tracks = [track]
        if rng.random() < distractor_fraction:
            dshape, dcolor = sampler.combo(rng, exclude_shapes=(first[0],))
            dtrack = _place_distractor(rng, h, w, occupied, float(track.r.max()), dshape, dcolor)
            if dtrack is not None:
                distractor = (dshape, dcolor)
                tracks.insert(0, dtrack)
        segments = [tracks]
    plan = _ClipPlan(h, w, fps, texture, texture_seed, segments)
    return _Unit(events, distractor, texture, h, w, n, plan, style_seed)


def _captions(unit: _Unit, events: Sequence[Event], count: int, swapped: bool = False,
              plain: bool = False) -> list[str]:
    """``count`` distinct paraphrases (fewer only if the templates run out).

    ``swapped`` (a two-event partner): each event keeps the wording it has in the original's caption.
    ``plain``: one caption in the first wording of every part ("a red circle moves left"), no background words.
    """
    if plain:
        return [make_caption(events, CaptionStyle(), unit.distractor, None)]
    rng = np.random.default_rng(unit.style_seed)
    out: list[str] = []
    for _ in range(50 * count):
        style = CaptionStyle.sample(rng)
        if swapped:
            style = replace(style, verbs=style.verbs[::-1], nouns=(*style.nouns[1::-1], *style.nouns[2:]))
        text = make_caption(events, style, unit.distractor, unit.texture)
        if text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


# --------------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------------


@dataclass
class WorldSummary:
    """What :func:`generate_world` wrote.

    ``num_temporal_negatives`` counts the partner clips (one per ``temporal_group``); ``num_test``
    includes them. ``num_heldout_test`` counts test clips showing a held-out (shape, colour).
    """

    out_dir: Path
    videos_dir: Path
    train_json: Path
    test_json: Path
    world_json: Path
    seed: int
    num_videos: int
    num_train: int
    num_test: int
    num_temporal_groups: int
    num_temporal_negatives: int
    num_heldout_test: int
    heldout_combos: list[tuple[str, str]]
    generator_version: str = GENERATOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (paths as strings)."""
        return {
            "out_dir": str(self.out_dir),
            "videos_dir": str(self.videos_dir),
            "train_json": str(self.train_json),
            "test_json": str(self.test_json),
            "world_json": str(self.world_json),
            "seed": self.seed,
            "num_videos": self.num_videos,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "num_temporal_groups": self.num_temporal_groups,
            "num_temporal_negatives": self.num_temporal_negatives,
            "num_heldout_test": self.num_heldout_test,
            "heldout_combos": [list(c) for c in self.heldout_combos],
            "generator_version": self.generator_version,
        }


def _choose_heldout(seed: int, k: int) -> list[tuple[str, str]]:
    """``k`` combinations with distinct shapes and distinct colours (each still seen in train otherwise)."""
    rng = np.random.default_rng((seed, 7))
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))]
    return sorted(zip(shapes[:k], colors[:k], strict=False))


def _record(unit: _Unit, video: str, events: Sequence[Event], caption: str | list[str],
            heldout: set[tuple[str, str]], group: str | None, role: str | None) -> dict[str, Any]:
    combos = set().union(*(e.combos() for e in events))
    if unit.distractor is not None:
        combos.add(unit.distractor)
    lengths = [len(seg[0].cx) for seg in unit.plan.segments]
    if role == "swapped":
        lengths = lengths[::-1]
    starts = np.cumsum([0, *lengths]).tolist()
    return {
        "video": video,
        "caption": caption,
        "events": [{**e.to_dict(), "frames": [starts[i], starts[i + 1]]} for i, e in enumerate(events)],
        "distractor": None if unit.distractor is None else {"shape": unit.distractor[0],
                                                            "color": unit.distractor[1]},
        "background": unit.texture,
        "num_frames": unit.num_frames,
        "height": unit.height,
        "width": unit.width,
        "fps": unit.plan.fps,
        "duration": round(unit.num_frames / unit.plan.fps, 4),
        "temporal_group": group,
        "temporal_role": role,
        "heldout_combo": bool(combos & heldout),
    }


def _prepare_out_dir(out: Path, overwrite: bool) -> Path:
    videos = out / "videos"
    existing = (out / "world.json").exists() or (videos.is_dir() and any(videos.glob("*.mp4")))
    if existing and not overwrite:
        raise ConfigError(f"{out} already holds a synthetic world; choose another directory or overwrite it")
    if videos.is_dir():
        for p in videos.glob("*.mp4"):
            p.unlink()
    for name in ("train.json", "test.json", "world.json"):
        (out / name).unlink(missing_ok=True)
    videos.mkdir(parents=True, exist_ok=True)
    return videos


def generate_world(
    out_dir: str | os.PathLike[str],
    num_videos: int,
    seed: int = 0,
    test_fraction: float = 0.2,
    *,
    hard_negative_fraction: float = 1.0,
    num_heldout_combos: int = 4,
    heldout_fraction: float = 0.25,
    two_event_fraction: float = 0.3,
    distractor_fraction: float = 0.3,
    fps: float = 8.0,
    plain_captions: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> WorldSummary:
    """Write the vtr-shapes world (``num_videos`` mp4 files in all) with a train and a test split.

    ``round(num_videos * test_fraction)`` files go to test; ``hard_negative_fraction`` of them come in
    temporal groups of two (a clip and its reversed or event-swapped partner). ``num_heldout_combos``
    (shape, colour) pairs never appear in train; ``heldout_fraction`` of the test clips (groups count
    once) are built around one. ``plain_captions``: one caption per clip in one fixed wording (the demo's
    easy world) instead of 2-3 paraphrases. ``workers`` processes render and encode (default: up to 2);
    ``progress(done, total)`` is called as videos are written.
    """
    if num_videos < 2:
        raise ConfigError(f"num_videos must be at least 2, got {num_videos}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    for name, value in (("hard_negative_fraction", hard_negative_fraction),
                        ("heldout_fraction", heldout_fraction), ("two_event_fraction", two_event_fraction),
                        ("distractor_fraction", distractor_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be in [0, 1], got {value}")
    if not 0 <= num_heldout_combos <= min(len(SHAPES), len(COLORS)):
        raise ConfigError(f"num_heldout_combos must be in [0, {min(len(SHAPES), len(COLORS))}]")
    if fps <= 0:
        raise ConfigError(f"fps must be positive, got {fps}")

    num_test = int(round(num_videos * test_fraction))
    num_train = num_videos - num_test
    if num_train < 1:
        raise ConfigError("test_fraction leaves no training clips; lower it or ask for more videos")
    num_groups = int(num_test * hard_negative_fraction) // 2
    num_singles = num_test - 2 * num_groups
    num_test_units = num_groups + num_singles

    out = Path(out_dir)
    videos = _prepare_out_dir(out, overwrite)
    heldout_list = _choose_heldout(seed, num_heldout_combos)
    heldout = set(heldout_list)
    sampler = _ComboSampler(heldout)

    # Which test units are built around a held-out combination.
    pick = np.random.default_rng((seed, 11))
    num_heldout_units = 0
    if heldout and num_test_units:
        num_heldout_units = max(1, int(round(heldout_fraction * num_test_units))) if heldout_fraction else 0
    heldout_units = set(pick.permutation(num_test_units)[:num_heldout_units].tolist())

    train_records: list[dict[str, Any]] = []
    test_records: list[dict[str, Any]] = []
    plans: list[_ClipPlan] = []
    for i in range(num_train):
        rng = np.random.default_rng((seed, 1, i))
        unit = _sample_unit(rng, sampler, fps, two_event_fraction, distractor_fraction, None)
        name = f"train_{i:05d}.mp4"
        unit.plan.outputs.append((str(videos / name), "forward"))
        count = 2 + int(rng.integers(2))
        train_records.append(_record(unit, name, unit.events, _captions(unit, unit.events, count,
                                                                        plain=plain_captions), heldout, None, None))
        plans.append(unit.plan)

    index = 0
    for u in range(num_test_units):
        rng = np.random.default_rng((seed, 2, u))
        forced = heldout_list[int(rng.integers(len(heldout_list)))] if u in heldout_units else None
        unit = _sample_unit(rng, sampler, fps, two_event_fraction, distractor_fraction, forced)
        name = f"test_{index:05d}.mp4"
        index += 1
        unit.plan.outputs.append((str(videos / name), "forward"))
        grouped = u < num_groups
        group = f"tg{u:05d}" if grouped else None
        test_records.append(_record(unit, name, unit.events, _captions(unit, unit.events, 1, plain=plain_captions)[0],
                                    heldout, group, "original" if grouped else None))
        if grouped:
            swap = len(unit.events) == 2
            partner_events = unit.events[::-1] if swap else [unit.events[0].reversed()]
            name = f"test_{index:05d}.mp4"
            index += 1
            unit.plan.outputs.append((str(videos / name), "swap" if swap else "reverse"))
            test_records.append(_record(unit, name, partner_events,
                                        _captions(unit, partner_events, 1, swap, plain=plain_captions)[0],
                                        heldout, group, "swapped" if swap else "reversed"))
        plans.append(unit.plan)

    leaked = [r["video"] for r in train_records if r["heldout_combo"]]
    if leaked:  # pragma: no cover - the sampler never draws held-out pairs for train
        raise RuntimeError(f"held-out combinations leaked into train: {leaked[:5]}")

    total = num_train + len(test_records)
    if progress is not None:
        progress(0, total)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    done = 0
    if workers == 1 or len(plans) < 4:
        for plan in plans:
            done += _render_job(plan)
            if progress is not None:
                progress(done, total)
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            for n_written in pool.imap(_render_job, plans, chunksize=4):
                done += n_written
                if progress is not None:
                    progress(done, total)

    (out / "train.json").write_text(json.dumps(train_records, indent=1) + "\n")
    (out / "test.json").write_text(json.dumps(test_records, indent=1) + "\n")
    summary = WorldSummary(
        out_dir=out,
        videos_dir=videos,
        train_json=out / "train.json",
        test_json=out / "test.json",
        world_json=out / "world.json",
        seed=seed,
        num_videos=total,
        num_train=num_train,
        num_test=len(test_records),
        num_temporal_groups=num_groups,
        num_temporal_negatives=num_groups,
        num_heldout_test=sum(r["heldout_combo"] for r in test_records),
        heldout_combos=heldout_list,
    )
    world = {
        "name": "vtr-shapes",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_videos": summary.num_videos,
        "num_train": summary.num_train,
        "num_test": summary.num_test,
        "num_temporal_groups": summary.num_temporal_groups,
        "num_temporal_negatives": summary.num_temporal_negatives,
        "num_heldout_test": summary.num_heldout_test,
        "heldout_combos": [list(c) for c in heldout_list],
        "options": {
            "test_fraction": test_fraction,
            "hard_negative_fraction": hard_negative_fraction,
            "heldout_fraction": heldout_fraction,
            "two_event_fraction": two_event_fraction,
            "distractor_fraction": distractor_fraction,
            "fps": fps,
            "plain_captions": plain_captions,
        },
        "shapes": list(SHAPES),
        "colors": list(COLORS),
        "actions": list(ACTIONS),
        "textures": list(TEXTURES),
        "files": {"videos": "videos", "train": "train.json", "test": "test.json"},
    }
    summary.world_json.write_text(json.dumps(world, indent=1) + "\n")
    return summary
