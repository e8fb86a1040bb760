"""KTH-style synthetic videos (for tests and benchmarks) and the bad inputs a prepare job must survive.

Videos follow KTH's naming and layout, `<root>/<action>/personXX_<action>_dY_uncomp.avi` (or flat
in `<root>`), 160x120 at 25 fps, gray content in 3-channel frames like the real set. A stick figure
moves the way its action does, so a classifier can tell the six classes apart:
boxing: alternating horizontal jabs; handclapping: two hands meeting in front of the body;
handwaving: both arms swinging up and down; jogging / running / walking: the figure crosses the
scene at 2.2 / 4 / 1 px per frame with swinging legs, bouncing off the borders. Scenarios vary like
KTH's: d1 plain, d2 slow zoom (scale changes), d3 lighter clothes, d4 darker (indoor) background.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import cv2
import numpy as np

from pipelines.kth import CATEGORIES, HEIGHT, WIDTH

FPS = 25
SCENARIOS = ("d1", "d2", "d3", "d4")
CODEC = "XVID"  # MPEG-4 part 2 in AVI, like KTH's DivX files; "MJPG" also round-trips here
_SPEED = {"walking": 1.0, "jogging": 2.2, "running": 4.0}


def video_name(person: int, action: str, scenario: str) -> str:
    return f"person{person:02d}_{action}_{scenario}_uncomp.avi"


def write_kth_videos(root: str | Path, persons: list[int], actions: tuple[str, ...] = CATEGORIES,
                     scenarios: tuple[str, ...] = SCENARIOS, frames: int | tuple[int, int] = 60,
                     seed: int = 0, layout: str = "nested", codec: str = CODEC) -> list[Path]:
    """Write one video per (person, action, scenario); returns their paths in that order.

    `frames`: frames per video, or a (min, max) range drawn per video. `layout`: "nested"
    (`<root>/<action>/<name>`, as KTH's zips unpack) or "flat" (`<root>/<name>`).
    """
    if layout not in ("nested", "flat"):
        raise ValueError(f"layout must be 'nested' or 'flat', got {layout!r}")
    unknown = [a for a in actions if a not in CATEGORIES]
    if unknown:
        raise ValueError(f"actions: unknown {unknown} (KTH actions: {', '.join(CATEGORIES)})")
    paths = []
    for person in persons:
        for action in actions:
            for scenario in scenarios:
                rng = np.random.default_rng([seed, person, CATEGORIES.index(action), SCENARIOS.index(scenario)])
                n = frames if isinstance(frames, int) else int(rng.integers(frames[0], frames[1] + 1))
                folder = Path(root) / action if layout == "nested" else Path(root)
                path = folder / video_name(person, action, scenario)
                write_video(path, render(action, scenario, n, rng), codec=codec)
                paths.append(path)
    return paths


def write_video(path: Path, frames: np.ndarray, codec: str = CODEC) -> Path:
    """Write gray frames `[N, H, W]` uint8 as a 3-channel AVI at 25 fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {codec} video to {path}")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def render(action: str, scenario: str, n: int, rng: np.random.Generator,
           size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Gray frames `[n, H, W]` uint8 of a figure doing `action` in `scenario`."""
    height, width = size
    background = 100 if scenario == "d4" else 170
    body = 90 if scenario == "d3" else 30
    base = (background + 20 * np.linspace(-1, 1, width)[None, :] * np.ones((height, 1))).astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi)
    x = rng.uniform(0.3, 0.7) * width
    direction = rng.choice([-1.0, 1.0])
    out = np.empty((n, height, width), np.uint8)
    for t in range(n):
        scale = 1.0 + (0.25 * math.sin(2 * math.pi * t / 150 + phase) if scenario == "d2" else 0.0)
        if action in _SPEED:
            x += direction * _SPEED[action]
            if not 15 * scale <= x <= width - 15 * scale:
                direction = -direction
                x = min(max(x, 15 * scale), width - 15 * scale)
        frame = base.copy()
        _draw_figure(frame, action, t, phase, x, height * 0.9, scale * height / 120, body)
        frame += rng.normal(0, 2, frame.shape).astype(np.float32)
        out[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


def _draw_figure(frame: np.ndarray, action: str, t: int, phase: float, cx: float, feet: float,
                 s: float, body: int) -> None:
    def pt(dx: float, dy: float) -> tuple[int, int]:
        return int(round(cx + dx * s)), int(round(feet + dy * s))

    thick = max(1, int(round(3 * s)))
    cv2.circle(frame, pt(0, -62), int(round(6 * s)), body, -1)
    cv2.rectangle(frame, pt(-6, -54), pt(6, -28), body, -1)
    swing = math.sin(2 * math.pi * t * _SPEED.get(action, 0.0) / 16 + phase) if action in _SPEED else 0.0
    for side in (-1, 1):
        cv2.line(frame, pt(side * 3, -28), pt(side * 3 + 10 * swing * side, 0), body, thick)
    for side, hand in ((-1, _hand(action, t, phase, -1)), (1, _hand(action, t, phase, 1))):
        cv2.line(frame, pt(side * 6, -50), pt(*hand), body, thick)
        if action == "handclapping":
            cv2.circle(frame, pt(*hand), int(round(3 * s)), body, -1)


def _hand(action: str, t: int, phase: float, side: int) -> tuple[float, float]:
    """Hand position (dx, dy) relative to the feet, in figure units (figure ~68 units tall)."""
    if action == "boxing":
        reach = max(0.0, math.sin(2 * math.pi * t / 10 + phase + (math.pi if side < 0 else 0.0)))
        return 10 + 20 * reach, -46 + 2 * side
    if action == "handclapping":
        gap = 3 + 12 * (1 + math.cos(2 * math.pi * t / 12 + phase)) / 2
        return side * gap, -40
    if action == "handwaving":
        angle = math.pi / 2 * (0.5 + 0.5 * math.sin(2 * math.pi * t / 16 + phase))
        return side * (6 + 22 * math.cos(angle)), -50 - 22 * math.sin(angle)
    swing = math.sin(2 * math.pi * t * _SPEED[action] / 16 + phase)
    return side * 8 + 8 * swing * side, -30


def write_bad_inputs(root: str | Path, person: int = 1, short_frames: int = 3) -> dict[str, Path]:
    """Inputs a KTH prepare job must reject (and go on); returns {kind: path}, flat in `root`.

    Kinds: empty (0 bytes), truncated (a real video cut to 60% of its bytes), not_video (text
    named .avi), bad_name (does not parse as personXX_action_dY), unknown_person (person31),
    short (`short_frames` frames, shorter than any usual window), wrong_size (320x240 frames).
    Parseable names use `person`, scenario d1 and one action per kind, so they do not collide
    with `write_kth_videos` output for other persons.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(person)
    paths = {
        "empty": root / video_name(person, "boxing", "d1"),
        "truncated": root / video_name(person, "handclapping", "d1"),
        "not_video": root / video_name(person, "handwaving", "d1"),
        "bad_name": root / "person1_boxing.avi",
        "unknown_person": root / video_name(31, "walking", "d1"),
        "short": root / video_name(person, "jogging", "d1"),
        "wrong_size": root / video_name(person, "running", "d1"),
    }
    paths["empty"].write_bytes(b"")
    write_video(paths["truncated"], render("handclapping", "d1", 40, rng))
    data = paths["truncated"].read_bytes()
    paths["truncated"].write_bytes(data[: int(len(data) * 0.6)])
    paths["not_video"].write_text("this is not a video\n" * 50)
    write_video(paths["bad_name"], render("boxing", "d1", 20, rng))
    write_video(paths["unknown_person"], render("walking", "d1", 20, rng))
    write_video(paths["short"], render("jogging", "d1", short_frames, rng))
    write_video(paths["wrong_size"], render("running", "d1", 20, rng, size=(240, 320)))
    return paths


def write_oversized_avi(path: str | Path, width: int = 30000, height: int = 30000, frames: int = 3) -> Path:
    """A hostile AVI: a few real uncompressed (RGBA) 160x120 frames behind headers (`avih` and the
    stream's BITMAPINFOHEADER) claiming `width` x `height` pixels; a decoder trusting the header
    would allocate width * height * 4 bytes per frame. Returns `path`."""
    path = Path(path)
    write_video(path, render("boxing", "d1", frames, np.random.default_rng(0)), codec="RGBA")
    data = bytearray(path.read_bytes())
    avih, strf = data.find(b"avih"), data.find(b"strf")
    if avih < 0 or strf < 0:
        raise RuntimeError(f"OpenCV wrote an AVI without avih/strf headers at {path}")
    struct.pack_into("<II", data, avih + 8 + 32, width, height)  # dwWidth, dwHeight
    struct.pack_into("<ii", data, strf + 8 + 4, width, height)  # biWidth, biHeight
    path.write_bytes(bytes(data))
    return path
