"""The README's two commands are the project's entry points: CI runs the second verbatim."""
from __future__ import annotations

from conftest import REPO


def test_ci_runs_the_readmes_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2 and block[0].endswith("convlstm demo") and block[1].endswith("python -m pytest")
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == block[1]
