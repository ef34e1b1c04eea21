from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lungseg.cli import main


def test_help_lists_every_stage() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lungseg.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("synthesize", "prepare"):
        assert command in out


def test_bad_params_key_is_one_line_error(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("prepare:\n  on_eror: skip\n")
    code = main(["--params", str(params), "prepare", "--raw", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "prepare.on_eror" in err[0] and "Traceback" not in err[0]
