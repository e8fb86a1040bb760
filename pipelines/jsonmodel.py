"""`JsonModel`: a pydantic model of a JSON file the project writes and reads back (the dataset manifest,
the evaluation result): validated when read, written with exactly the keys it was read or built with.

Keys a model does not declare are kept as written (`extra="allow"`); a value that breaks a declared
field is a one-line ValueError naming the file and the field, dotted (`splits.train.count`).
"""
from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from pipelines import storage

Number = int | float  # kept as written: 300 stays 300 and 300.0 stays 300.0 (fingerprints hash the JSON)


class JsonModel(BaseModel):
    """Declared keys are checked, others are kept; `to_json()` is the JSON object back, nothing added."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    kind: ClassVar[str] = "JSON document"  # what the file is, in error messages

    def to_json(self) -> dict[str, Any]:
        """The JSON object this was read or built from: the same keys (by their JSON names), nothing added."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def __getitem__(self, key: str) -> Any:
        """The JSON value under `key`, as the file holds it: for scripts and tests that read the file as
        an object. Library code uses the attributes (tests/test_layers.py checks)."""
        return self.to_json()[key]

    @classmethod
    def read(cls, path: str, name: str, missing: str):
        """Read and validate the file `name` in the folder `path` (or the file itself, local or a URI):
        FileNotFoundError `no <missing> at <path>` without it, a one-line ValueError naming the file for
        text that is not JSON or not a valid `kind`."""
        path = str(path)
        file = path if path.rstrip("/").endswith(name) else storage.join(path, name)
        if not storage.exists(file):
            raise FileNotFoundError(f"no {missing} at {path} (missing {name})")
        try:
            data = json.loads(storage.read_text(file))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file}: not a readable {cls.kind} ({type(exc).__name__}: {exc})") from None
        return cls.parse(data, file)

    @classmethod
    def parse(cls, data: Any, where: str):
        """Validate plain JSON data read from `where`; ValueError `<where>: not a <kind> (<field> ...)`
        naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: not a {cls.kind} (a JSON {type(data).__name__}, not an object)")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{where}: not a {cls.kind} ({first_error(exc)})") from None


def first_error(exc: ValidationError) -> str:
    """The first error of `exc` on one line: `'<dotted field>' is missing` or `'<field>': <reason>, got <value>`."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"{field!r} is missing"
    return f"{field!r}: {error['msg'].lower()}, got {error.get('input')!r}"[:300]
