"""bench/sets.py: the side-by-side figures are the per-image differences of the rows the benchmark wrote."""

from __future__ import annotations

import json

import pytest

from bench.sets import main, set_figures


def row(method: str, image: str, t: float, psnr: float, ms_ssim: float, **kw) -> dict:
    return {"method": method, "image": image, "target_bpp": t, "psnr": psnr, "ms_ssim": ms_ssim, "bpp": t, **kw}


@pytest.fixture
def result() -> dict:
    rows = []
    for image, ours, env, bic in (("a", 30.0, 28.0, 29.5), ("b", 25.0, 26.0, 24.0)):
        rows += [
            row("ours-av1", image, 0.02, ours, 0.9),
            row("ours-av1+bicubic", image, 0.02, bic, 0.89),
            row("best-classical", image, 0.02, env, 0.85, source="avif@2"),
            row("ours-av1", image, 0.3, ours, 0.9),  # outside the goal range: left out
        ]
    rows.append(row("ours-av1", "c", 0.02, 40.0, 0.99))  # no classical file fits: left out
    return {"config": {"targets": [0.02, 0.3], "images": ["a", "b", "c"], "model_fingerprint": "abc"}, "rows": rows}


def test_figures_are_per_image_differences(result):
    f = set_figures(result)
    assert list(f) == ["0.02"]
    g = f["0.02"]
    assert (g["images"], g["of"]) == (2, 3)
    assert g["psnr_gain_db"] == pytest.approx(0.5) and g["psnr_gain_min_db"] == pytest.approx(-1.0)
    assert g["worst_image"] == "b" and g["ms_ssim_gain"] == pytest.approx(0.05)
    assert g["decoder_over_bicubic_db"] == pytest.approx(0.75)


def test_writes_table_and_plot(result, tmp_path):
    for name in ("k.json", "m.json"):
        (tmp_path / name).write_text(json.dumps(result))
    assert main([str(tmp_path / "k.json"), str(tmp_path / "m.json"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "sets.md").read_text()
    assert "**+0.50 dB**" in md and "-1.00 dB (b)" in md and "| b | -1.00 (avif@2) |\n" in md
    assert (tmp_path / "out" / "sets.png").stat().st_size > 10_000
