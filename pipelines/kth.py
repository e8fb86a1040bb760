"""KTH actions: AVI videos -> windows of `frame_len` frames, split by person, as Parquet shards.

Input as downloaded (`<src>/<action>/personXX_<action>_dY_uncomp.avi`) or flat; label, person and
scenario come from the file name. Frames are converted to gray with cv2 BGR2GRAY (or to RGB with
`color`) and resized to `size` (H, W) with cv2.INTER_AREA; shards hold uint8 `[T, C, H, W]`.
Windows start every `stride` frames (0-indexed `start`); with a sequences file, only inside the
annotated subsequences. Unusable inputs are rejected with a reason and the job goes on.

`src` may be an object-store URI (`s3://bucket/raw/kth`, any pyarrow filesystem): the driver only
lists the objects, and each decode task (on whichever node Ray runs it) downloads its video to a
local temporary file, decodes it and deletes it. A local `src` on a multi-node cluster must be a
folder every node mounts (pipelines.cluster).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines import cluster, storage
from pipelines import kth_splits as person_split
from pipelines.driver import DatasetSpec, Publish, run_prepare
from pipelines.sources import Rejected, Source, build_options
from pipelines.kth_sequences import load_sequences
from pipelines.manifest import Manifest

TASK = "kth"
CATEGORIES = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
HEIGHT, WIDTH = 120, 160  # KTH frame size
MAX_FRAMES = 20_000  # per video (13 min at 25 fps); KTH's longest is ~1500: a bound on decoded memory
_NAME = re.compile(r"^person(\d+)_([a-z]+)_(d[1-4])(?:_uncomp)?\.avi$")


@dataclass(frozen=True)
class KthOptions:
    """frame_len/stride in frames; size (H, W) of the shards; split: preset name or JSON path."""

    frame_len: int = 15
    stride: int = 15
    size: tuple[int, int] = (60, 80)
    color: bool = False
    split: str = "official"
    sequences: str | None = None

    def __post_init__(self):
        for name in ("frame_len", "stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"--size must be two positive sizes HxW, got {self.size}")

    def to_params(self) -> dict:
        """Manifest params; the split mapping itself is in `splits[*].members`, the sequences file by hash."""
        sequences = hashlib.sha256(Path(self.sequences).read_bytes()).hexdigest() if self.sequences else None
        return {"frame_len": self.frame_len, "stride": self.stride, "size": list(self.size), "color": self.color,
                "split": self.split if self.split in person_split.PRESETS else "custom",
                "sequences_sha256": sequences}

    @classmethod
    def from_manifest(cls, manifest: Manifest, workdir: Path, **overrides) -> "KthOptions":
        """The options a manifest was built with (`to_params` read back), `overrides` on top. A custom
        split is rebuilt from the recorded members into `workdir/split.json`; a sequences file, kept
        only by hash, must come back as the `sequences` override."""
        params = manifest.params
        split = params["split"]
        if split == "custom":
            split = str(Path(workdir) / "split.json")
            Path(split).write_text(json.dumps({s: v.members for s, v in manifest.splits.items()}))
        if params.get("sequences_sha256") and not overrides.get("sequences"):
            raise ValueError("prepare.sequences: the dataset was cut with a sequences file "
                             f"(sha256 {params['sequences_sha256'][:12]}); give its path")
        values = {"frame_len": params["frame_len"], "stride": params["stride"], "size": tuple(params["size"]),
                  "color": params["color"], "split": split}
        return build_options(cls, values, overrides)


def parse_name(name: str) -> tuple[int, str, str]:
    """`personXX_<action>_dY_uncomp.avi` -> (person, action, scenario); ValueError with the reason."""
    match = _NAME.match(name)
    if not match or match.group(2) not in CATEGORIES:
        raise ValueError("file name does not parse as personXX_<action>_dY_uncomp.avi")
    return int(match.group(1)), match.group(2), match.group(3)


class VideoUri(str):
    """An object-store video (`s3://bucket/raw/kth/boxing/person01_boxing_d1_uncomp.avi`) with the
    `name`/`stem` a `Path` has, so local and remote videos are planned alike."""

    @property
    def name(self) -> str:
        return storage.name_of(self)

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


def find_videos(src: str | Path) -> list[Path] | list[VideoUri]:
    """All `.avi` files under `src` (nested by action or flat), sorted: local Paths, or for an
    object-store `src` the objects' URIs."""
    if storage.is_remote(src):
        if not storage.is_dir(src):
            raise FileNotFoundError(f"--src {src}: no such folder (no object under that prefix)")
        return [VideoUri(storage.join(storage.as_uri(src), rel))
                for rel in storage.list_files(src) if rel.lower().endswith(".avi")]
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"--src {src}: no such folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".avi")


def plan(src: str | Path, options: KthOptions) -> tuple[list[Source], list[dict], dict[str, list[int]]]:
    """Videos under `src` -> (sources to decode, files rejected by name, split definition).

    Raises ValueError before any decoding when a known person is in no split (see pipelines.kth_splits)
    and, naming --src, when no video is left to decode (an empty folder publishes nothing).
    """
    split = person_split.load_split(options.split)
    by_person = person_split.person_splits(split)
    sequences = load_sequences(options.sequences) if options.sequences else None
    sources, rejected, seen = [], [], {}
    persons = set()
    for path in find_videos(src):
        try:
            person, action, scenario = parse_name(path.name)
        except ValueError as exc:
            rejected.append({"file": str(path), "reason": str(exc)})
            continue
        if not person_split.is_known(person, split):
            rejected.append({"file": str(path), "reason": f"unknown person id {person} (KTH has persons 1-25)"})
            continue
        if path.stem in seen:
            rejected.append({"file": str(path), "reason": f"duplicate video name, already found at {seen[path.stem]}"})
            continue
        persons.add(person)
        ranges, reason = _ranges(sequences, f"person{person:02d}_{action}_{scenario}")
        if reason:
            rejected.append({"file": str(path), "reason": reason})
            continue
        seen[path.stem] = path
        sources.append(Source(name=path.stem, paths=[str(path)], split=by_person.get(person, ""),
                              meta={"label": CATEGORIES.index(action), "person": person,
                                    "scenario": scenario, "ranges": ranges}))
    person_split.check_covered(persons, split, options.split)
    if not sources:
        found = f"{len(rejected)} .avi file(s), none usable; first: {rejected[0]['file']}: {rejected[0]['reason']}" \
            if rejected else "no .avi video in it"
        raise ValueError(f"--src {src}: {found}; nothing to prepare")
    return sources, rejected, split


def _ranges(sequences: dict | None, entry: str) -> tuple[list | None, str | None]:
    if sequences is None:
        return None, None
    if entry not in sequences:
        return None, f"no entry {entry} in the sequences file"
    if not sequences[entry]:
        return None, f"{entry} is marked *missing* in the sequences file"
    return sequences[entry], None


def schema(options: KthOptions) -> dict:
    channels = 3 if options.color else 1
    return {
        "frames": {"shape": [options.frame_len, channels, *options.size], "dtype": "uint8", "unit": "pixel",
                   "encoding": "RGB" if options.color else "gray (cv2 BGR2GRAY)"},
        "label": {"shape": [], "dtype": "int64", "classes": list(CATEGORIES)},
        "person": {"shape": [], "dtype": "int64"},
        "scenario": {"shape": [], "dtype": "str"},
        "source": {"shape": [], "dtype": "str"},
        "start": {"shape": [], "dtype": "int64", "unit": "frame (0-indexed)"},
    }


def params(options: KthOptions) -> dict:
    """Manifest params (`KthOptions.to_params`)."""
    return options.to_params()


def prepare_kth(src: str | Path, out: str, options: KthOptions = KthOptions(), *,
                publish: Publish = Publish()) -> Manifest:
    """Decode the KTH videos under `src` (folder or object-store URI) into window shards at `out`;
    returns the manifest. On a multi-node cluster a node-local `out` or `src` is refused first."""
    cluster.check_paths({"--out": str(out), "--src": str(src)}, address=publish.address)
    sources, rejected, split = plan(src, options)
    spec = DatasetSpec(task=TASK, params=params(options), schema=schema(options), members=split)
    return run_prepare(spec, sources, partial(video_windows, options=options), out, rejected=rejected,
                       protect=[str(src)], publish=publish)


def video_windows(source: Source, *, options: KthOptions) -> Iterator[dict]:
    """Ray task body: decode one video, yield its windows {frames [T, C, H, W], label, person, ...}."""
    import cv2  # deferred: OpenCV ~4 s to import; the module's other users skip it

    cv2.setNumThreads(1)  # one Ray CPU per task: no oversubscription
    with storage.local_copies(source.paths[:1], prefix="convlstm-kth-") as (local,):  # object store: fetch
        frames = decode_video(local, options.size, options.color)
    count = 0
    for first, stop in source.meta["ranges"] or [(0, len(frames))]:
        stop = min(stop, len(frames))
        for start in range(first, stop - options.frame_len + 1, options.stride):
            count += 1
            yield {"frames": frames[start:start + options.frame_len], "label": source.meta["label"],
                   "person": source.meta["person"], "scenario": source.meta["scenario"],
                   "source": source.name, "start": start}
    if not count:
        raise Rejected(f"shorter than one window: {len(frames)} frames, window {options.frame_len}")


def decode_video(path: str, size: tuple[int, int], color: bool) -> np.ndarray:
    """All frames of a 160x120 KTH video as uint8 `[N, C, H, W]` (C = 1 gray or 3 RGB) at `size` (H, W).

    Raises Rejected for files OpenCV cannot open, videos without frames, frames that are not
    160x120 (checked from the header before decoding when the header states a size), more than
    MAX_FRAMES frames, truncated files (fewer frames decoded than the header declares, minus one)
    and any OpenCV error on a malformed file.
    """
    import cv2  # deferred: OpenCV ~4 s to import; the module's other users skip it

    try:
        return _decode_video(cv2, path, size, color)
    except cv2.error as exc:
        raise Rejected(f"unreadable: OpenCV error: {str(exc).strip().splitlines()[-1]}") from exc


def _decode_video(cv2, path: str, size: tuple[int, int], color: bool) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise Rejected("unreadable: OpenCV cannot open it as a video (empty or not a video file)")
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width and height and (height, width) != (HEIGHT, WIDTH):
            raise Rejected(f"frames are {width}x{height}, KTH videos are {WIDTH}x{HEIGHT}")
        conversion = cv2.COLOR_BGR2RGB if color else cv2.COLOR_BGR2GRAY
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if frame.shape[:2] != (HEIGHT, WIDTH):
                raise Rejected(f"frames are {frame.shape[1]}x{frame.shape[0]}, KTH videos are {WIDTH}x{HEIGHT}")
            if len(frames) == MAX_FRAMES:
                raise Rejected(f"more than {MAX_FRAMES} frames (MAX_FRAMES); KTH videos hold a few hundred")
            small = cv2.resize(cv2.cvtColor(frame, conversion), (size[1], size[0]), interpolation=cv2.INTER_AREA)
            frames.append(small.transpose(2, 0, 1) if color else small[None])
    finally:
        capture.release()
    if not frames:
        raise Rejected("no decodable frames (empty or not a video file)")
    if declared > 0 and len(frames) < declared - 1:
        raise Rejected(f"truncated: decoded {len(frames)} of {declared} frames")
    return np.stack(frames)
