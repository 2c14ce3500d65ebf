"""The Kodak benchmark: a quick run on one image and two targets, checked value by value."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assr_eic.baselines import best_under_budget
from bench import classical, common, report
from bench import kodak as kodak_bench

DATA = Path(__file__).resolve().parent.parent / ".cache" / "data"
IMAGE = "kodim03"
TARGETS = (0.02, 0.1)
CODECS = ("jpeg", "webp", "avif")
SCALES = (1, 2, 4)


@pytest.fixture(scope="module")
def kodak() -> dict[str, np.ndarray]:
    from assr_eic.train.data import load_eval_set
    from assr_eic.train.fetch import fetch_eval_set

    try:
        fetch_eval_set(DATA)
    except RuntimeError as e:  # no PyPI here and no cached crops
        pytest.skip(f"Kodak crops unavailable: {e}")
    return load_eval_set(DATA)


@pytest.fixture(scope="module")
def run(tmp_path_factory, kodak, model_path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--out", str(out), "--model", model_path, "--data", str(DATA), "--images", IMAGE,
            "--targets", ",".join(map(str, TARGETS)), "--codecs", ",".join(CODECS),
            "--scales", ",".join(map(str, SCALES)), "--cache", str(out / "cache.json"),
            "--speed-methods", "ours-av1,webp,ours-av1=0.1,ours-av1-fast=0.1", "--jobs", "1"]  # fmt: skip
    assert kodak_bench.main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def rows_of(result: dict, method: str, target: float | None = None) -> list[dict]:
    return [r for r in result["rows"] if r["method"] == method and (target is None or r["target_bpp"] == target)]


class TestQuickRun:
    def test_rows(self, run):
        _, res = run
        classical = [f"{c}@{s:g}" for c in CODECS for s in SCALES] + [f"{c}@best" for c in CODECS]
        for method in [*common.OURS, "ours-av1+bicubic", *classical, "best-classical"]:
            for t in TARGETS:
                (row,) = rows_of(res, method, t)
                assert row["image"] == IMAGE
                assert row["status"] in ("ok", "unreachable", "no_fit")
                if row["status"] == "ok":
                    assert row["bpp"] == pytest.approx(row["bytes"] * 8 / (512 * 384))
                    assert 5 < row["psnr"] < 60 and 0 < row["ms_ssim"] <= 1

    def test_ours_within_tolerance_or_unreachable(self, run):
        _, res = run
        for m in common.OURS:
            for t in TARGETS:
                (row,) = rows_of(res, m, t)
                if row["status"] == "ok":
                    assert abs(row["bpp"] / t - 1) <= 0.1 and row["within_tolerance"]
                    assert 1 <= row["scale"] <= 8 and 0 <= row["quality"] <= 1 and row["encode_ms"] > 0
                else:
                    assert row["status"] == "unreachable" and row["message"]
        assert rows_of(res, "ours-av1", TARGETS[1])[0]["status"] == "ok"  # 0.1 bpp is well within av1's range

    def test_ablation_is_the_same_file(self, run):
        _, res = run
        for t in TARGETS:
            (ours,) = rows_of(res, "ours-av1", t)
            (abl,) = rows_of(res, "ours-av1+bicubic", t)
            if ours["status"] == "ok":
                assert (abl["bytes"], abl["scale"], abl["quality"]) == (ours["bytes"], ours["scale"], ours["quality"])
                # the test model's decoder is bicubic plus a small random residual
                assert abs(abl["psnr"] - ours["psnr"]) < 1.0

    def test_classical_fits_our_budget(self, run):
        _, res = run
        for t in TARGETS:
            (ours,) = rows_of(res, "ours-av1", t)
            budget = ours["bytes"] if ours["status"] == "ok" else math.floor(t * 512 * 384 / 8)
            classical = [r for r in res["rows"] if r["target_bpp"] == t and r.get("budget_bytes") is not None]
            assert len(classical) == len(CODECS) * (len(SCALES) + 1) + 2
            for r in classical:
                assert r["budget_bytes"] == budget
                if r["status"] == "ok":
                    assert r["bytes"] <= budget

    def test_envelope_is_the_max(self, run):
        _, res = run
        for t in TARGETS:
            per_scale = [r for c in CODECS for s in SCALES for r in rows_of(res, f"{c}@{s:g}", t)]
            ok = [r for r in per_scale if r["status"] == "ok"]
            assert ok, "some classical codec fits at 0.02 and 0.1 bpp"
            (env,) = rows_of(res, "best-classical", t)
            assert all(env["psnr"] >= r["psnr"] for r in ok)
            assert env["psnr"] == max(r["psnr"] for r in ok) and env["source"] in {r["method"] for r in ok}
            (env_ms,) = rows_of(res, "best-classical-msssim", t)
            assert env_ms["ms_ssim"] == max(r["ms_ssim"] for r in ok)
            for c in CODECS:
                (best,) = rows_of(res, f"{c}@best", t)
                mine = [r["psnr"] for r in ok if r["codec"] == c]
                assert best["psnr"] == (max(mine) if mine else None)

    def test_classical_matches_best_under_budget(self, run, kodak):
        _, res = run
        (row,) = rows_of(res, "avif@1", TARGETS[1])
        ref = best_under_budget(kodak[IMAGE], "avif", row["budget_bytes"], 1)
        assert ref is not None and row["status"] == "ok"
        assert (row["quality"], row["bytes"]) == (ref.quality, ref.nbytes)
        assert row["psnr"] == pytest.approx(ref.psnr, abs=1e-9) and row["ms_ssim"] == pytest.approx(ref.ms_ssim)

    def test_summary(self, run):
        out, res = run
        s = res["summary"]
        for m in ("ours-av1", "best-classical", "avif@1"):
            assert set(s["mean"][m]) == {f"{t:g}" for t in TARGETS}
        (ours,) = rows_of(res, "ours-av1", TARGETS[1])
        assert s["mean"]["ours-av1"]["0.1"]["psnr"] == pytest.approx(ours["psnr"])
        for key in ("bd", "bd_all_targets"):
            assert {"ours-av1 vs avif@1", "ours-av1 vs avif@best", "ours-av1 vs best-classical"} <= set(s[key])
        assert s["landing"]["ours-av1"]["files"] >= 1
        text = (out / "summary.md").read_text()
        assert "| target bpp |" in text and "| 0.02 |" in text and "| 0.1 |" in text and "BD-rate" in text
        # rate control's other efforts: their own columns, and their goal margins next to the default's
        assert "ours (av1, fast)" in text and "ours (av1, best)" in text
        efforts = s["goal_efforts_named_codecs"]
        assert set(efforts) == set(common.EFFORT_VARIANTS)
        assert all(set(g) == set(s["goal_named_codecs"]) for g in efforts.values())

    def test_speed(self, run):
        _, res = run
        by = {r["method"]: r for r in res["speed"]}
        assert set(by) == {"ours-av1", "webp", "ours-av1=0.1", "ours-av1-fast=0.1"}
        assert (by["ours-av1=0.1"]["effort"], by["ours-av1-fast=0.1"]["effort"]) == ("normal", "fast")
        assert abs(by["ours-av1-fast=0.1"]["bpp"] / 0.1 - 1) <= 0.1
        assert by["ours-av1"]["target_bpp"] == common.SPEED_BPP and by["ours-av1=0.1"]["target_bpp"] == 0.1
        assert abs(by["ours-av1=0.1"]["bpp"] / 0.1 - 1) <= 0.1  # the file it timed is a 0.1 bpp file
        for r in by.values():
            assert "error" not in r, r
            assert (r["width"], r["height"]) == (768, 512)
            assert r["peak_rss_mb"] > 20 and r["warm_encode_ms"] > 0 and r["warm_decode_ms"] > 0
        assert by["ours-av1"]["peak_rss_mb"] >= by["ours-av1"]["start_rss_mb"]

    def test_pictures(self, run):
        out, res = run
        for name in ("rd_psnr.png", "rd_msssim.png", "grid_0.02.png"):
            p = out / name
            assert p.is_file() and p.stat().st_size > 0
            with Image.open(p) as im:
                assert im.width > 200 and im.height > 200
        with Image.open(out / "grid_0.02.png") as im:  # one row: the original crop and each method at 2x
            assert im.height >= 2 * common.CROP


class TestClassicalCache:
    def test_rerun_uses_the_cache_and_gives_the_same_rows(self, tmp_path, photo):
        img = np.ascontiguousarray(photo[:96, :128])
        budgets = {0.5: (700, "target"), 1.0: (1500, "target")}
        first = classical.classical_job(img, "p", "webp", (1, 2), budgets, {})
        assert first["misses"] > 0
        again = classical.classical_job(img, "p", "webp", (1, 2), budgets, first["entries"])
        assert again["misses"] == 0 and again["hits"] > 0
        strip = [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in first["rows"]]
        assert strip == [{k: v for k, v in r.items() if not k.endswith("_ms")} for r in again["rows"]]
        ref = best_under_budget(img, "webp", 1500, 2)
        (row,) = [r for r in first["rows"] if r["target_bpp"] == 1.0 and r["scale"] == 2]
        assert (row["quality"], row["bytes"]) == (ref.quality, ref.nbytes)

    def test_saved_and_reloaded_unless_the_codecs_changed(self, tmp_path):
        path = tmp_path / "c.json"
        c = classical.ClassicalCache(path)
        c.put("k", "webp", 2, 50, {"bytes": 123})
        c.save()
        assert classical.ClassicalCache(path).get("k", "webp", 2, 50) == {"bytes": 123}
        saved = json.loads(path.read_text())
        saved["env"]["pillow"] = "0.0"
        path.write_text(json.dumps(saved))
        assert classical.ClassicalCache(path).entries == {}


def test_bd_rate_on_mean_curves():
    """Half the rate at the same PSNR on every image gives -50% against the anchor."""
    targets = [0.01, 0.02, 0.05, 0.1, 0.2]
    rows = []
    for img in ("a", "b"):
        for t in targets:
            p = 20 + 3 * math.log2(t / 0.01) + (img == "b")
            rows.append({"method": "A", "image": img, "target_bpp": t, "status": "ok", "bpp": t, "psnr": p,
                         "ms_ssim": 0.9, "encode_ms": 1.0, "decode_ms": 1.0})  # fmt: skip
            rows.append({**rows[-1], "method": "B", "bpp": t / 2})
    rows.append({**rows[-1], "method": "C", "image": "a"})  # one image only: never used for BD
    curves = report.mean_curves(rows, ["a", "b"], targets)
    assert curves["A"]["0.05"]["psnr"] == pytest.approx(20 + 3 * math.log2(5) + 0.5)
    assert not curves["C"]["0.2"]["complete"]
    bd = report.bd_rates(curves, targets, ["B", "C"], ["A"])
    assert bd["B vs A"]["targets"] == [0.01, 0.02, 0.05, 0.1]  # 0.2 is outside the BD range
    assert bd["B vs A"]["bd_rate"] == pytest.approx(-50.0, abs=1e-6)
    assert bd["C vs A"]["bd_rate"] is None and "fewer than 2" in bd["C vs A"]["note"]
    for t in targets:  # D is 10 dB below A everywhere: no PSNR in common, no BD-rate (not nan)
        for img in ("a", "b"):
            rows.append({**next(r for r in rows if r["method"] == "A" and r["image"] == img and r["target_bpp"] == t),
                         "method": "D"})  # fmt: skip
            rows[-1]["psnr"] -= 10
    bd = report.bd_rates(report.mean_curves(rows, ["a", "b"], targets), targets, ["D"], ["A"])
    assert bd["D vs A"]["bd_rate"] is None and bd["D vs A"]["note"] == "PSNR ranges do not overlap"
    assert bd["D vs A"]["bd_psnr"] == pytest.approx(-10.0, abs=1e-6)


def test_goal_check_compares_image_by_image():
    """The goal table pairs each image with its own best classical file and skips images without one."""

    def row(method, image, t, psnr, ms):
        return {"method": method, "image": image, "target_bpp": t, "psnr": psnr, "ms_ssim": ms}

    rows = [
        row("ours-av1", "a", 0.02, 25.0, 0.80), row("best-classical", "a", 0.02, 23.5, 0.75),
        row("ours-av1", "b", 0.02, 20.0, 0.70), row("best-classical", "b", 0.02, 19.8, 0.71),
        row("best-classical-msssim", "b", 0.02, 19.0, 0.72),
        row("ours-av1", "c", 0.02, 30.0, 0.90),  # no classical file fits: left out
        row("ours-av1", "a", 0.3, 35.0, 0.95), row("best-classical", "a", 0.3, 30.0, 0.90),  # outside 0.01-0.1
    ]  # fmt: skip
    g = report.goal_check(rows, [0.02, 0.3])
    assert list(g) == ["0.02"]
    assert g["0.02"]["images"] == 2
    assert g["0.02"]["psnr_gain_db"] == pytest.approx((1.5 + 0.2) / 2)
    assert g["0.02"]["psnr_gain_min_db"] == pytest.approx(0.2)
    assert g["0.02"]["ms_ssim_gain"] == pytest.approx((0.05 - 0.02) / 2)
    assert g["0.02"]["met"] is False  # 0.85 dB < 1 dB
    rows[2]["psnr"] = 20.5
    assert report.goal_check(rows, [0.02])["0.02"]["met"] is True


def test_goal_check_against_named_codecs_only():
    """With ``codecs`` the envelope is the best of those codecs at any scale, per metric, per image."""

    def row(method, image, psnr, ms):
        return {"method": method, "image": image, "target_bpp": 0.1, "psnr": psnr, "ms_ssim": ms}

    rows = [
        row("ours-av1", "a", 26.0, 0.90), row("best-classical", "a", 25.5, 0.89),
        row("heic@1", "a", 25.5, 0.89), row("webp@1.5", "a", 24.6, 0.85), row("webp@2", "a", 24.8, 0.84),
        row("webp@best", "a", 30.0, 0.99),  # a derived row, never part of the envelope
    ]  # fmt: skip
    all_five = report.goal_check(rows, [0.1])["0.1"]
    named = report.goal_check(rows, [0.1], codecs=("webp", "jpeg"))["0.1"]
    assert all_five["psnr_gain_db"] == pytest.approx(0.5) and not all_five["met"]
    assert named["psnr_gain_db"] == pytest.approx(1.2) and named["ms_ssim_gain"] == pytest.approx(0.05)
    assert named["met"]
