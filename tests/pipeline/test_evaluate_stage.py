"""evaluate through dvc on tiny params: reports, figures, the registered champion, idempotent registration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.real_ct import real_ct

from .conftest import run

pytestmark = pytest.mark.pipeline


def test_evaluate_reports_unet_and_baseline_per_case(reproduced: Path) -> None:
    split = json.loads((reproduced / "data/interim/split.json").read_text())
    metrics = json.loads((reproduced / "reports/metrics.json").read_text())
    assert metrics["test_cases"] == len(split["test"]) >= 1
    for method in ("unet", "baseline"):
        for key in ("dice", "iou", "dice_right", "dice_left", "hd95_mm", "msd_mm", "net_dice"):
            assert 0.0 <= metrics[method][key]["mean"] <= (1.0 if "dice" in key else 1e4), (method, key)
    assert "net_bce" in metrics["unet"]
    assert metrics["cascade"] is True and metrics["stage1"]["dice"]["mean"] >= 0.0  # the 64^3 network alone, beside it
    assert json.loads((reproduced / "reports/refine_metrics.json").read_text())["enabled"] is True
    rows = list(csv.DictReader((reproduced / "reports/per_case.csv").open()))
    assert sorted(r["case"] for r in rows if r["method"] == "unet") == sorted(split["test"])
    unet = [r for r in rows if r["method"] == "unet"]
    assert {c for c, codes in metrics["warnings"].items() if codes} == {r["case"] for r in unet if r["warnings"]}
    assert all(float(r["preprocess_max_abs_diff"]) < 1e-4 for r in unet)  # the Segmenter = the preprocess stage
    for case in split["test"]:
        assert (reproduced / "reports/figures/test" / f"{case}.png").stat().st_size > 10_000
    shown = run(["dvc", "metrics", "show"], reproduced).stdout
    assert "reports/metrics.json" in shown


def test_evaluate_scores_the_real_cts_separately(reproduced: Path) -> None:
    for case in (("copdgene-10002k", "ct.nii.gz"), ("copdgene-10002k", "lungs.nii.gz"), ("abdomen-lung-bases", "no-lung-dicom")):
        real_ct(*case)  # skipped visibly (naming the path) where the shared real CTs are absent
    metrics = json.loads((reproduced / "reports/metrics.json").read_text())
    chest, no_lung = metrics["real_copdgene_10002k"], metrics["real_abdomen_no_lung"]
    assert 0.0 <= chest["unet"]["dice"] <= 1.0 and chest["baseline"]["dice"] > 0.95  # measured 0.964
    assert chest["unet"]["true_volume_ml"] == pytest.approx(chest["baseline"]["true_volume_ml"])
    assert "dice" not in no_lung["unet"] and no_lung["baseline"]["volume_ml"] < 5.0
    codes = [w.split(":")[0] for w in no_lung["unet"]["warnings"]]  # the quality warnings, per real case
    assert ("no lung" in codes) == (no_lung["unet"]["volume_ml"] < 50) and "warnings" not in no_lung["baseline"]
    assert not any(k.startswith("real_abdomen_lung_bases") for k in metrics)  # its relative path is missing here
    for case in ("copdgene_10002k", "abdomen_no_lung"):
        assert (reproduced / "reports/figures/real" / f"{case}.png").stat().st_size > 10_000
    rows = list(csv.DictReader((reproduced / "reports/per_case.csv").open()))
    assert not any(r["case"].startswith("real") or "copdgene" in r["case"] for r in rows)  # apart from the test split
    import mlflow  # the real CTs' scores are on the champion's card too

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{reproduced / 'mlflow.db'}")
    description = client.get_model_version_by_alias("lung-segmentation", "champion").description
    assert "Real CT" in description and "abdomen_no_lung" in description and "copdgene_10002k" in description


def test_champion_registered_once_and_again_in_a_fresh_registry(reproduced: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{reproduced / 'mlflow.db'}")
    versions = client.search_model_versions("name='lung-segmentation'")
    assert len(versions) == 1
    champion = client.get_model_version_by_alias("lung-segmentation", "champion")
    metrics = json.loads((reproduced / "reports/metrics.json").read_text())
    assert float(champion.tags["test_dice"]) == pytest.approx(metrics["unet"]["dice"]["mean"], abs=1e-5)
    for tag in ("git_commit", "dvc_processed_md5", "test_iou", "test_hd95_mm", "param.model.base_filters"):
        assert champion.tags[tag] not in ("", "unknown"), tag
    assert "Test split" in champion.description and "Cascade" in champion.description
    assert "SYNTHETIC cohort only" in champion.description  # the card says honestly what it was trained on

    run(["lungseg", "register"], reproduced)  # idempotent: still one version
    assert len(client.search_model_versions("name='lung-segmentation'")) == 1

    # A clone whose registry is empty (DVC's run-cache skipped evaluate): `lungseg register` restores it.
    fresh = reproduced / "fresh_params.yaml"
    params = yaml.safe_load((reproduced / "params.yaml").read_text())
    params["tracking"]["tracking_uri"] = f"sqlite:///{reproduced / 'fresh.db'}"
    fresh.write_text(yaml.safe_dump(params))
    try:
        run(["lungseg", "--params", str(fresh), "register"], reproduced)
        other = mlflow.MlflowClient(tracking_uri=f"sqlite:///{reproduced / 'fresh.db'}")
        assert other.get_model_version_by_alias("lung-segmentation", "champion").tags["lungseg_key"] == \
            champion.tags["lungseg_key"]
    finally:
        fresh.unlink()
        (reproduced / "fresh.db").unlink(missing_ok=True)
