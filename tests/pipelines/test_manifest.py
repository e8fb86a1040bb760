"""The dataset manifest is one typed model (`pipelines.manifest.Manifest`): what the pipelines publish
loads back unchanged, byte for byte; manifests written before `layout`, `files`, `seen` and `created`
existed still load; a hand-broken field is a one-line error naming the file and the field (exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from faults import cli, one_line
from pipelines.manifest import MANIFEST_NAME, Manifest, fingerprint, load_manifest, write_manifest

# A KTH manifest as the first releases wrote it: no `layout` (windows), `files`, `seen` or `created`;
# person ids as split members, windows per class.
OLDER = {
    "pipeline_version": "1", "task": "kth",
    "params": {"frame_len": 16, "size": [64, 64], "stride": 8, "split": "tutorial"},
    "schema": {"frames": {"shape": [16, 1, 64, 64], "dtype": "uint8", "unit": "pixel"},
               "label": {"shape": [], "dtype": "int64", "classes": ["boxing", "walking"]},
               "source": {"shape": [], "dtype": "str"}},
    "splits": {"train": {"members": [11, 12], "count": 7, "per_class": {"boxing": 3, "walking": 4}},
               "test": {"members": [22], "count": 2, "per_class": {"boxing": 2}}},
    "sources": {"person11_boxing_d1": {"size": 120, "sha256": "ab" * 32, "split": "train", "windows": 3,
                                       "per_class": {"boxing": 3}}},
    "rejected": [{"file": "person13_walking_d1_uncomp.avi", "reason": "not a video"}],
}


def older_manifest() -> dict:
    manifest = json.loads(json.dumps(OLDER))
    manifest["fingerprint"] = fingerprint(manifest)
    return manifest


def published(folder: Path, manifest: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_an_older_manifest_loads_and_is_written_back_with_its_own_keys(tmp_path):
    raw = older_manifest()
    manifest = load_manifest(published(tmp_path / "kth", raw))
    assert manifest.layout == "windows" and manifest.files is None and manifest.created is None
    assert manifest.splits["train"].members == [11, 12] and manifest.count("train") == 7 and manifest.count("val") == 0
    assert manifest.columns["label"].classes == ["boxing", "walking"] and manifest.rejected[0].source is None
    assert manifest.to_json() == raw and fingerprint(manifest) == raw["fingerprint"]
    (tmp_path / "copy").mkdir()
    write_manifest(str(tmp_path / "copy"), manifest)
    assert json.loads((tmp_path / "copy" / MANIFEST_NAME).read_text()) == raw


def test_numbers_keep_their_json_type_so_fingerprints_do_not_move(tmp_path):
    raw = {**older_manifest(), "task": "radar", "time_step_s": 300, "params": {"in_len": 5, "scale": 2.0}}
    manifest = Manifest.parse(raw, "test")
    assert type(manifest.time_step_s) is int and type(manifest.params["scale"]) is float
    assert json.dumps(manifest.to_json(), sort_keys=True) == json.dumps(raw, sort_keys=True)


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["splits"]["train"].update(count="many"), "'splits.train.count'"),
    (lambda m: m["splits"]["test"].pop("count"), "'splits.test.count' is missing"),
    (lambda m: m["schema"]["frames"].update(shape=[16, 0, 64, 64]), "'schema.frames.shape.1'"),
    (lambda m: m["schema"]["label"].pop("dtype"), "'schema.label.dtype' is missing"),
    (lambda m: m["sources"]["person11_boxing_d1"].update(windows=-1), "'sources.person11_boxing_d1.windows'"),
    (lambda m: m.update(layout="tiles"), "'layout'"),
    (lambda m: m.update(grid={"height": 32, "width": 32}), "'grid.source_height' is missing"),
    (lambda m: m.pop("fingerprint"), "'fingerprint' is missing"),
    (lambda m: m.update(task=""), "'task'"),
])
def test_a_hand_broken_field_is_one_line_naming_the_file_and_the_field(tmp_path, capsys, edit, field):
    raw = older_manifest()
    edit(raw)
    data = published(tmp_path / "kth", raw)
    with pytest.raises(ValueError) as caught:
        load_manifest(data)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{data / MANIFEST_NAME}: ") and field in message
    code, _, err = cli(capsys, "verify", "--data", data)
    assert code == 2
    one_line(err, str(data / MANIFEST_NAME), field)


def test_what_the_pipeline_publishes_loads_back_byte_for_byte(mch_tiny, tmp_path):
    """The runs-layout radar manifest with every optional key (grid, encoding, gaps, seen, files)."""
    text = (Path(mch_tiny) / MANIFEST_NAME).read_text()
    manifest = load_manifest(mch_tiny)
    assert manifest.layout == "runs" and manifest.grid.height == 32 and manifest.seen is not None
    assert manifest.to_json() == json.loads(text) and fingerprint(manifest) == manifest.fingerprint
    write_manifest(str(tmp_path), manifest)
    assert (tmp_path / MANIFEST_NAME).read_text() == text
