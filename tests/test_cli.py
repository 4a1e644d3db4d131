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
    assert main(["mix", "--mixer", "cutmix", "--pairs", "5", "--img-size", "48", "--out", str(tmp_path / "m")]) == 0
    path = tmp_path / "m" / "cutmix_grid.png"
    assert capsys.readouterr().out.strip() == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mix_grid_pairs_distinct_classes_per_sample_boxes_and_gaze_mixers():
    import matplotlib.pyplot as plt

    from gazemix.cli.mix import mix_figure
    from tests.layout import overlapping_texts, texts_outside

    fig, _ = mix_figure("cutmix", {}, pairs=8, size=48, seed=0, show_gaze=True)
    captions = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(captions) == 8
    for caption in captions:
        first, second = (part.rsplit(" ", 1)[0] for part in caption.split(" + "))
        assert first != second  # never an image mixed with its own class
    assert len(set(captions)) > 1  # per-sample boxes: not one label weight for the whole grid
    assert overlapping_texts(fig) == [] and texts_outside(fig) == []
    plt.close(fig)
    for name in ("gazemix", "rmix@gaze"):
        fig, _ = mix_figure(name, {}, pairs=4, size=48, seed=1, show_gaze=False)
        plt.close(fig)


def test_mix_unknown_mixer_is_a_clear_error(tmp_path, capsys):
    assert main(["mix", "--mixer", "cutmx", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "unknown mixer 'cutmx'" in err and "cutmix" in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "gazemix", "mixers", "--csv"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "name,reads,modes,summary,reference"


def test_help_of_every_command_imports_no_heavy_library():
    code = ("import sys, contextlib, io\n"
            "from gazemix.cli import build_parser\n"
            "parser = build_parser()\n"
            "commands = parser._subparsers._group_actions[0].choices\n"
            "for name, sub in commands.items():\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        sub.format_help()\n"
            "print(sorted(commands), [m for m in ('torch', 'pandas', 'gradio', 'timm', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    commands, heavy = out.rsplit("] [", 1)
    assert "score" in commands and "train" in commands and "bench" in commands
    assert heavy.strip() == "]", f"--help imports {heavy}"
