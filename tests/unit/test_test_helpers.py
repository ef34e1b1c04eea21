"""The shared test helpers behave as promised (tests/helpers/): real-CT data absent means a visible skip naming
the path (a failure where LUNGSEG_REQUIRE_REAL_CT=1), an incomplete copy is a failure, never a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import real_ct as helper
from tests.helpers.digests import file_digests, tree_digest


@pytest.fixture
def fake_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "shared" / "real-ct"
    monkeypatch.setattr(helper, "REAL_CT", root)
    monkeypatch.setattr(helper, "NSCLC_DIR", tmp_path / "nsclc-radiomics")
    monkeypatch.delenv(helper.REQUIRE_ENV, raising=False)
    return root


def test_absent_real_ct_is_a_skip_naming_the_path(fake_shared: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=str(fake_shared)):
        helper.real_ct("copdgene-10002k", "dicom")
    with pytest.raises(pytest.skip.Exception, match=r"nsclc-radiomics not present .*make real-ct"):
        helper.nsclc_series("001")


def test_absent_real_ct_fails_where_it_is_required(fake_shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(helper.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{fake_shared} not present.*LUNGSEG_REQUIRE_REAL_CT=1"):
        helper.real_ct()
    with pytest.raises(pytest.fail.Exception, match="LUNGSEG_REQUIRE_REAL_CT=1"):
        helper.nsclc_series()


def test_an_incomplete_copy_fails_and_a_complete_one_is_returned(fake_shared: Path) -> None:
    (fake_shared / "copdgene-10002k").mkdir(parents=True)
    with pytest.raises(pytest.fail.Exception, match=r"copdgene-10002k/dicom is missing .*incomplete copy"):
        helper.real_ct("copdgene-10002k", "dicom")
    (fake_shared / "copdgene-10002k" / "dicom").mkdir()
    assert helper.real_ct("copdgene-10002k", "dicom") == fake_shared / "copdgene-10002k" / "dicom"
    nsclc = helper.NSCLC_DIR
    (nsclc / "LUNG1-001" / "dicom").mkdir(parents=True)
    with pytest.raises(pytest.fail.Exception, match="only part of the NSCLC-Radiomics series: missing .*LUNG1-002"):
        helper.nsclc_series("001")
    for case in ("002", "003"):
        (nsclc / f"LUNG1-{case}" / "dicom").mkdir(parents=True)
    assert helper.nsclc_series("003") == nsclc / "LUNG1-003" / "dicom"


def test_digests_see_content_names_and_depth(tmp_path: Path) -> None:
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "x.txt").write_text("one")
    (tmp_path / "a" / "sub" / "y.txt").write_text("two")
    assert sorted(file_digests(tmp_path / "a")) == ["sub/y.txt", "x.txt"]
    assert sorted(file_digests(tmp_path / "a", recursive=False)) == ["x.txt"]
    before = tree_digest(tmp_path / "a")
    (tmp_path / "a" / "sub" / "y.txt").write_text("tw0")
    assert tree_digest(tmp_path / "a") != before
    (tmp_path / "a" / "sub" / "y.txt").write_text("two")
    assert tree_digest(tmp_path / "a") == before
    (tmp_path / "a" / "sub" / "y.txt").rename(tmp_path / "a" / "sub" / "z.txt")
    assert tree_digest(tmp_path / "a") != before  # the name counts, not only the bytes
