"""The real sample archives the tour uses: listed in `jobs/samples/catalogue.json` (public URL, size and
sha256 of every file), fetched into `<home>/samples/<name>/` with their checksums verified.

A file lands under its final name only once its bytes match the catalogue's sha256 (downloaded to a
`.part` file beside it, then renamed), so an interrupted or corrupted fetch never leaves a file that
looks complete; a second fetch skips what is already there and verified.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jobs.paths import project_home

UPSTREAM = "https://raw.githubusercontent.com"
BASE_URL_ENV = "CONVLSTM_SAMPLES_URL"


@dataclass(frozen=True)
class SampleFile:
    path: str  # relative to the sample's folder
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Sample:
    name: str
    description: str
    format: str | None  # the `convlstm prepare radar --format` that reads it, None for non-radar samples
    files: tuple[SampleFile, ...]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def catalogue() -> dict[str, Sample]:
    """The samples by name, in catalogue order."""
    text = resources.files("jobs").joinpath("samples", "catalogue.json").read_text()
    return {name: Sample(name, s["description"], s["format"], tuple(SampleFile(**f) for f in s["files"]))
            for name, s in json.loads(text)["samples"].items()}


def samples_dir() -> Path:
    """`<home>/samples`: where fetched samples live."""
    return project_home() / "samples"


def sample(name: str) -> Sample:
    samples = catalogue()
    if name not in samples:
        raise ValueError(f"unknown sample {name!r}: choose from {', '.join(samples)}")
    return samples[name]


def fetched_files(s: Sample, root: Path | None = None) -> int:
    """How many of the sample's files are present under `root` (default `samples_dir()`) with the right size."""
    folder = (root or samples_dir()) / s.name
    return sum(1 for f in s.files if (p := folder / f.path).is_file() and p.stat().st_size == f.size)


def fetch(s: Sample, base_url: str | None = None, root: Path | None = None,
          progress: Callable[[SampleFile], None] | None = None) -> Path:
    """Download every file of `s` that is missing or wrong into `<root>/<name>/`, verify each sha256, and
    return the folder. `base_url` (or CONVLSTM_SAMPLES_URL) replaces the `https://raw.githubusercontent.com`
    prefix of every URL: a mirror with the same paths. A checksum mismatch or an HTTP error is a
    ValueError naming the file and URL; files already verified are kept."""
    base = (base_url or os.environ.get(BASE_URL_ENV) or UPSTREAM).rstrip("/")
    folder = (root or samples_dir()) / s.name
    for f in s.files:
        target = folder / f.path
        if target.is_file() and _sha256(target) == f.sha256:
            continue
        url = base + f.url.removeprefix(UPSTREAM) if f.url.startswith(UPSTREAM) else f.url
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        try:
            digest = _download(url, part)
        except (urllib.error.URLError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise ValueError(f"could not fetch {f.path} of sample {s.name} from {url}: {exc}") from None
        if digest != f.sha256:
            part.unlink()
            raise ValueError(f"{f.path} of sample {s.name} from {url} has sha256 {digest[:12]}…, "
                             f"expected {f.sha256[:12]}… (a changed or corrupted download; nothing kept)")
        part.replace(target)
        if progress:
            progress(f)
    return folder


def _download(url: str, part: Path) -> str:
    h = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
