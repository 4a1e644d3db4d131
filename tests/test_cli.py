"""The command line: sub-command discovery, `gazemix mixers`, `gazemix mix` and its errors."""

from __future__ import annotations

import subprocess
import sys

from gazemix.cli import main


def test_help_lists_subcommands():
    from gazemix.cli import build_parser
    text = build_parser().format_help()
    for cmd in ("mix", "mixers"):
        assert cmd in text


def test_mixers_table_lists_every_registered_mixer(capsys, monkeypatch):
    from gazemix import list_mixers
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["mixers"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100
    for info in list_mixers():
        assert info.name in out
    assert main(["mixers", "--wide"]) == 0
    wide = capsys.readouterr().out
    for info in list_mixers():
        assert info.name in wide and info.reference.split(",")[0] in wide


def test_mix_writes_a_png_grid(tmp_path, capsys):
    assert main(["mix", "--mixer", "cutmix", "--n", "5", "--size", "48", "--out", str(tmp_path)]) == 0
    path = tmp_path / "cutmix_grid.png"
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mix_unknown_mixer_is_a_clear_error(tmp_path, capsys):
    assert main(["mix", "--mixer", "cutmx", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown mixer 'cutmx'" in err and "cutmix" in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "gazemix", "mixers", "--csv"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "name,reads,modes,summary,reference"
