from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from lungseg.config import Params, load_params, params_from_dict
from lungseg.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_into_typed_objects() -> None:
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.prepare.split.train == pytest.approx(0.70)
    assert "Lung_R" in params.prepare.roi_aliases.right
    assert isinstance(params.prepare.roi_aliases.left, tuple)


def _unspelt(default: object, raw: dict, prefix: str = "") -> list[str]:
    """The dotted keys of every field of the config dataclass ``default`` (and of the dataclasses inside it)
    that ``raw`` does not spell out. A mapping field (``tune.search_space``, ``evaluate.real_ct``) needs its
    key; its entries are the user's and keep their own optional fields."""
    out = []
    for f in dataclasses.fields(default):
        key = f"{prefix}{f.name}"
        if not isinstance(raw, dict) or f.name not in raw:
            out.append(key)
        elif dataclasses.is_dataclass(value := getattr(default, f.name)):
            out += _unspelt(value, raw[f.name], f"{key}.")
    return out


def test_every_default_key_is_spelled_out_in_params_yaml() -> None:
    """params.yaml documents the whole config: no dataclass field, at any depth, is missing from it."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _unspelt(Params(), raw) == []
    assert {f.name for f in dataclasses.fields(Params)} == set(raw)  # and no section it does not know


def test_a_key_missing_from_params_yaml_is_caught() -> None:
    """The check above sees a field left out at the top, in a section and deep in a nested section."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["cv"], raw["augment"]["noise_sd"], raw["prepare"]["split"]["folds"], raw["postprocess"]["surface"]["rim"]
    assert set(_unspelt(Params(), raw)) == {"cv", "augment.noise_sd", "prepare.split.folds", "postprocess.surface.rim"}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"prepare": {"splt": {}}}, "prepare.splt"),
        ({"synthesise": {}}, "synthesise"),
        ({"prepare": {"nifti": {"image_patern": "x"}}}, "prepare.nifti.image_patern"),
        ({"postprocess": {"surface": {"air_HU": -400}}}, "postprocess.surface.air_HU"),
    ],
)
def test_unknown_key_is_an_error_naming_it(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown params key '{key}'"):
        params_from_dict(raw)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"synthesize": {"cases": "ten"}}, "synthesize.cases"),
        ({"synthesize": {"cases": True}}, "synthesize.cases"),
        ({"prepare": {"on_error": "ignore"}}, "prepare.on_error"),
        ({"prepare": {"split": {"train": 0.9, "val": 0.2, "test": 0.1}}}, "prepare.split"),
        ({"prepare": {"roi_aliases": {"right": "Lung_R"}}}, "prepare.roi_aliases.right"),
        ({"postprocess": {"max_gas_fraction": 1.5}}, "postprocess.max_gas_fraction"),
        ({"postprocess": {"surface": {"p_air": 0.9, "p_tissue": 0.5}}}, "postprocess.surface"),
        ({"postprocess": {"surface": {"enabled": "yes"}}}, "postprocess.surface.enabled"),
        ({"postprocess": {"surface": {"rim": True, "rim_hu": -600.0}}}, "postprocess.surface.rim_hu"),
        ({"preprocess": {"normalize": "zscore"}}, "preprocess.normalize"),
        ({"preprocess": {"norm_sd": 0.0}}, "preprocess.norm_sd"),
        ({"prepare": {"contour_fill": "corners"}}, "prepare.contour_fill"),
        ({"train": {"steps_per_epoch": -1}}, "train.steps_per_epoch"),
        ({"tune": {"steps_per_epoch": -2}}, "tune.steps_per_epoch"),
        ({"train": {"init_from": 3}}, "train.init_from"),
        ({"cv": {"folds": [0, 5]}}, "cv.folds"),  # prepare.split.folds is 5: folds 0-4
        ({"cv": {"folds": [1, 1]}}, "cv.folds"),
    ],
)
def test_bad_values_are_errors_naming_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        params_from_dict(raw)


def test_load_params_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("prepare:\n  formatt: dicom\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: unknown params key 'prepare\.formatt'"):
        load_params(p)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_dataclass_defaults_are_the_params_yaml_values() -> None:
    """One source of defaults: ``Params()`` equals params.yaml, section by section and field by field."""
    defaults, from_file = Params(), load_params(REPO / "params.yaml")
    differences = []
    for section in dataclasses.fields(Params):
        default, loaded = getattr(defaults, section.name), getattr(from_file, section.name)
        for f in dataclasses.fields(default):
            if getattr(default, f.name) != getattr(loaded, f.name):
                differences.append(f"{section.name}.{f.name}: config.py {getattr(default, f.name)!r} "
                                   f"!= params.yaml {getattr(loaded, f.name)!r}")
    assert not differences, "config.py defaults drifted from params.yaml:\n" + "\n".join(differences)
    assert defaults == from_file
    assert params_from_dict({}) == defaults  # an empty params file means the defaults


def test_a_drifted_default_is_caught(tmp_path: Path) -> None:
    """The comparison above sees one changed value deep in a section."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tune"]["search_space"]["noise_sd"]["high"] = 0.3
    other = tmp_path / "params.yaml"
    other.write_text(yaml.safe_dump(raw))
    assert load_params(other).tune != Params().tune
    assert load_params(other).model == Params().model
