"""The mouse-vs-eye proxy measurement (``gazemix.proxy``, ``gazemix proxy``): constructed cases with known
answers, a CLI smoke test on a tiny OSIE-layout fixture, and a small run on the real OSIE release."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_adapters.base import Fixations
from gazemix.cli import main
from gazemix.proxy import (IMAGE_PREDICTORS, METRICS, PairedGaze, measure_images, measure_mixers, pair_samples,
                           summarise_images)
from gazemix.scoring import build_mixers
from tests.conftest import SHARED, needs_shared
from tests.test_osie import cell, save_eye, save_mouse, subject

H, W = 48, 64
MIXERS = "cutmix,fmix,resizemix,gridmix,mixup"


def hotspots(n: int, seed: int) -> np.ndarray:
    """One off-centre hotspot ``(x, y)`` per image, in different places."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(6, W - 7, n), rng.uniform(6, H - 7, n)], axis=1)


def observers(centre: np.ndarray, n_obs: int, per: int, rng: np.random.Generator, spread: float = 3.0) -> Fixations:
    """``n_obs`` observers with ``per`` points each, scattered around ``centre``, clipped to the image."""
    pts = centre + rng.normal(0, spread, (n_obs * per, 2))
    x, y = np.clip(pts[:, 0], 0, W - 1), np.clip(pts[:, 1], 0, H - 1)
    return Fixations(x, y, np.full(len(x), 200.0), np.repeat(np.arange(n_obs), per))


def paired(proxy: str, n: int = 10, seed: int = 0) -> PairedGaze:
    """Eye data around each image's hotspot; the proxy is a copy ("same"), other observers around the same
    hotspot ("good"), or observers around the mirrored hotspot ("bad")."""
    rng = np.random.default_rng(seed)
    centres = hotspots(n, seed)
    eye = [observers(c, 6, 4, rng) for c in centres]
    if proxy == "same":
        prox = [Fixations(e.x.copy(), e.y.copy(), np.full(len(e), np.nan), e.observer.copy()) for e in eye]
    else:
        where = centres if proxy == "good" else np.stack([W - 1 - centres[:, 0], H - 1 - centres[:, 1]], axis=1)
        prox = [observers(c, 5, 10, rng, spread=4.0) for c in where]
    return PairedGaze([f"{k}" for k in range(n)], [(H, W)] * n, eye, prox, distinct_proxy=False, name=proxy)


def mixers_for(names: str = MIXERS):
    mixers, _ = build_mixers(names, num_classes=None, seed=0, has_images=False)
    return mixers


# --------------------------------------------------------------------------------------- known answers
def test_identical_proxy_gives_identical_gaps_and_rank_correlation_one():
    data = paired("same")
    images = measure_images(data, size=32, splits=2, progress=False)
    assert np.allclose(images.table["proxy_cc"], 1.0)  # the same map as the eye data
    assert (images.maps["proxy"] == images.maps["eye"]).all()
    result = measure_mixers(images.maps, data.ids, mixers_for(), pairs=40, n_boot=50, progress=False)
    s = result.samples
    np.testing.assert_array_equal(s["gap_eye"], s["gap_proxy"])
    pm = result.per_mixer.set_index("mixer")
    assert (pm["gap_diff"] == 0).all() and (pm["dlam_eye_vs_proxy"] == 0).all()
    assert pm["shared_mixes"].all() and not pm["gaze_driven"].any()
    assert not pm.loc["mixup", "gaze_sensitive"] and pm.drop(index="mixup")["gaze_sensitive"].all()
    assert (pm["rank_eye"] == pm["rank_proxy"]).all()
    row = result.ranking[(result.ranking["comparison"] == "eye vs proxy") & (result.ranking["set"] == "sensitive")]
    assert row["n_mixers"].item() == 4 and "mixup" not in row["mixers"].item()
    for stat in ("spearman", "kendall"):
        assert row[stat].item() == pytest.approx(1.0)
        assert row[f"{stat}_lo"].item() == pytest.approx(1.0)  # every resample orders them alike too


def test_identical_observers_give_split_half_agreement_one():
    """When every eye observer fixates the same points, half A's map equals half B's: CC = 1, AUC = NSS maximal."""
    data = paired("good")
    same = Fixations(np.tile([10.0, 40.0], 6), np.tile([12.0, 30.0], 6), np.full(12, 100.0), np.repeat(np.arange(6), 2))
    data.eye = [same] * len(data)
    table = measure_images(data, size=32, splits=3, progress=False).table
    np.testing.assert_allclose(table["eye_half_cc"], 1.0, atol=1e-6)
    # every image's eye map is the same, so another image's half-A map is as good as its own
    np.testing.assert_allclose(table["eye_half_shuffled_cc"], table["eye_half_cc"], atol=1e-6)


def test_a_bad_proxy_scores_lower_than_a_good_one():
    good, bad = paired("good"), paired("bad")
    tg = measure_images(good, size=32, progress=False)
    tb = measure_images(bad, size=32, progress=False)
    for metric in METRICS:
        assert (tg.table[f"proxy_matched_{metric}"] > tb.table[f"proxy_matched_{metric}"]).all()
        assert tg.table[f"proxy_{metric}"].median() > tb.table[f"proxy_{metric}"].median()
        # the eye data and the shuffled reference do not depend on the proxy
        pd.testing.assert_series_equal(tg.table[f"eye_half_{metric}"], tb.table[f"eye_half_{metric}"])
    sg, sb = summarise_images(tg.table, n_boot=50), summarise_images(tb.table, n_boot=50)
    norm = lambda s, m: s[(s["predictor"] == "normalised") & (s["metric"] == m)]["mean"].item()
    assert norm(sg, "cc") > 0.5 > norm(sb, "cc")
    mg = measure_mixers(tg.maps, good.ids, mixers_for("cutmix,resizemix"), pairs=40, n_boot=50, progress=False)
    mb = measure_mixers(tb.maps, bad.ids, mixers_for("cutmix,resizemix"), pairs=40, n_boot=50, progress=False)
    dg, db = (m.per_mixer.set_index("mixer")["dlam_eye_vs_proxy"] for m in (mg, mb))
    assert (db > dg).all()  # the bad proxy's gaze weights stray further from the eye data's


def test_matched_observer_counts_and_determinism():
    data = paired("good")
    data.proxy[0] = Fixations(np.array([3.0, 5.0]), np.array([4.0, 6.0]), np.full(2, np.nan), np.array([7, 9]))
    a = measure_images(data, size=24, splits=2, seed=3, progress=False).table
    assert (a["n_half_a"] == 3).all() and (a["n_half_b"] == 3).all()
    assert a["n_proxy_matched"].tolist() == [2] + [3] * (len(data) - 1)  # image 0 has only 2 proxy observers
    b = measure_images(data, size=24, splits=2, seed=3, progress=False).table
    pd.testing.assert_frame_equal(a, b)
    c = measure_images(data, size=24, splits=2, seed=4, progress=False).table
    assert not np.allclose(a["eye_half_nss"], c["eye_half_nss"])
    assert {f"{p}_{m}" for p in IMAGE_PREDICTORS for m in METRICS} <= set(a.columns)


def test_gaze_driven_mixers_are_reported_but_not_ranked():
    data = paired("bad")
    images = measure_images(data, size=32, progress=False)
    mixers, _ = build_mixers("cutmix,resizemix,fmix,gazemix", num_classes=None, seed=0, has_images=False)
    result = measure_mixers(images.maps, data.ids, mixers, pairs=24, n_boot=30, progress=False)
    pm = result.per_mixer.set_index("mixer")
    assert pm.loc["gazemix", "gaze_driven"] and np.isnan(pm.loc["gazemix", "rank_eye"])
    assert all("gazemix" not in m for m in result.ranking["mixers"])


def test_pairing_and_input_checks():
    data = paired("good", n=3)
    with pytest.raises(ValueError, match="one entry per image"):
        PairedGaze(data.ids, data.sizes[:2], data.eye, data.proxy)
    one = Fixations(np.array([1.0]), np.array([1.0]), np.array([1.0]), np.array([0]))
    with pytest.raises(ValueError, match="1 eye observer"):
        PairedGaze(data.ids, data.sizes, [one] * 3, data.proxy)
    with pytest.raises(ValueError, match="splits must be at least 1"):
        measure_images(data, splits=0)
    with pytest.raises(ValueError, match="lacks the gaze variants"):
        measure_mixers({}, data.ids, mixers_for())


# ---------------------------------------------------------------------------------------- CLI (fixture)
def osie_fixture(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    centres = hotspots(n, 1)
    entries = []
    for k, (cx, cy) in enumerate(centres):
        stem = f"{1001 + k}"
        path = root / "data" / "stimuli" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)
        subs = []
        for _ in range(4):
            x = np.clip(cx + rng.normal(0, 3, 3), 0, W - 1) + 1  # MATLAB 1-based
            y = np.clip(cy + rng.normal(0, 3, 3), 0, H - 1) + 1
            subs.append(subject(x, y, rng.integers(80, 400, 3)))
        entries.append({"img": f"{stem}.jpg", "subjects": cell(subs)})
        rows = np.clip(np.round(cy + rng.normal(0, 4, 15)), 0, H - 1) + 1
        cols = np.clip(np.round(cx + rng.normal(0, 4, 15)), 0, W - 1) + 1
        save_mouse(root, stem, np.repeat([1, 2, 3], 5), np.tile(np.arange(1, 6), 3), np.stack([rows, cols], 1))
    save_eye(root, entries)
    return root


def test_cli_writes_tables_plot_and_summary(tmp_path, capsys):
    root = osie_fixture(tmp_path / "osie")
    out = tmp_path / "run"
    argv = ["proxy", "--root", str(root), "--out", str(out), "--pairs", "12", "--img-size", "32", "--n-boot", "20",
            "--mixers", "cutmix,mixup,resizemix,saliencymix", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "proxy_matched - eye_half" in printed and "Spearman" in printed and "saliencymix" in printed
    for name in ("per_image.csv", "per_image_summary.csv", "per_mixer.csv", "ranking.csv", "samples.parquet",
                 "summary.md", "proxy.png", "config.json"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "per_image.csv")) == 6
    assert set(pd.read_csv(out / "per_mixer.csv")["mixer"]) == {"cutmix", "mixup", "resizemix", "saliencymix"}
    assert (out / "proxy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "config.json").read_text())["command"] == "proxy"
    assert "## Ranking of the mixers" in (out / "summary.md").read_text()
    assert main(argv) == 0  # a previous proxy output is replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["osie", "run"]  # no temporary folders left


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    root = osie_fixture(tmp_path / "osie", n=3)
    base = ["proxy", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(base + ["--root", str(tmp_path / "nowhere")]) == 2
    assert "--root" in capsys.readouterr().err
    assert main(base + ["--root", str(root), "--mouse", "mouse_amt"]) == 2
    err = capsys.readouterr().err
    assert "needs 'eye' and 'mouse_amt'" in err and "Traceback" not in err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["proxy", "--root", str(root), "--out", str(foreign), "--quiet"]) == 2
    assert "not a previous `gazemix proxy` output" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert main(base + ["--root", str(root), "--pairs", "0"]) == 2
    assert "--pairs must be at least 1" in capsys.readouterr().err
    (root / "data" / "eye" / "fixations.mat").write_bytes(b"")
    assert main(base + ["--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "fixations.mat: cannot read the .mat file" in err[-1]  # the loading line, the error


# ------------------------------------------------------------------------------------------ real data
@needs_shared
def test_real_osie_few_images():
    from data_adapters.osie import Osie

    root = SHARED / "data" / "osie"
    ids = [f"{k}" for k in range(1001, 1013)]
    data, note = pair_samples(Osie(root, images=ids), Osie(root, source="mouse_lab", images=ids))
    assert len(data) == 12 and note.startswith("12 images with both")
    images = measure_images(data, size=64, progress=False)
    t = images.table
    assert (t["n_eye_observers"] == 15).all() and (t["n_half_a"] == 7).all() and (t["n_proxy_matched"] == 7).all()
    for metric in METRICS:  # the mouse map of the same image beats another image's map
        assert t[f"proxy_{metric}"].median() > t[f"proxy_shuffled_{metric}"].median()
        assert t[f"eye_half_{metric}"].median() > t[f"eye_half_shuffled_{metric}"].median()
    result = measure_mixers(images.maps, data.ids, mixers_for("cutmix,resizemix,mixup"), pairs=16, n_boot=30,
                            progress=False)
    pm = result.per_mixer.set_index("mixer")
    assert pm.loc[["cutmix", "resizemix"], "gaze_sensitive"].all() and not pm.loc["mixup", "gaze_sensitive"]
