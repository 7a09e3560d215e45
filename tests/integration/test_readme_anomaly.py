"""The README's anomaly flow ("Defect detection from good images only"), run as written on real ELPV cells.

Not in the default run (it adds 2 minutes, and the suite must stay under 10 on 2 cores):
``pytest -m readme_extra``. The flow also runs on all 2,624 cells, three split seeds, in
``benchmarks/quickstart.py``. The one change to the commands, as in ``test_quickstart.py``: the
data step takes ``--limit 300``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.readme_extra]  # not in the default run: -m readme_extra

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_quickstart import _run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from quickstart import ANOMALY, QUICKSTART, readme_commands  # noqa: E402


def test_the_anomaly_flow_runs_as_written(tmp_path: Path):
    _run(readme_commands(QUICKSTART)[0], tmp_path)  # the quickstart's data step: the flow reads data/elpv
    for command in readme_commands(ANOMALY):
        _run(command, tmp_path)
    assert any((tmp_path / "overlays").iterdir())
