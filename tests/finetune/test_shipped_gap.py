"""The shipped HOMO-LUMO gap committee (gfn2-gap): loads on the shipped base, agrees with GFN2-xTB run live, and
reaches users through predict_properties and ``triscale predict --property``."""

import json

import numpy as np
import pytest
from ase.build import molecule

from triscale.finetune.property import PropertyCommittee, load_property_model, shipped_properties

# NCI-like molecules (the heads trained on NCI molecules; tiny g2 molecules such as H2O are out of distribution)
NAMES = ["CH3CH2OH", "CH3COCH3", "CH3CN", "C4H4S", "C4H4O"]


@pytest.fixture(scope="module")
def gap():
    return load_property_model("gfn2-gap")


def test_shipped_committee_loads_on_the_shipped_base(gap):
    assert "gfn2-gap" in shipped_properties()
    assert isinstance(gap, PropertyCommittee) and len(gap) == 4 and gap.shared_encoder
    assert gap.name == "gap" and gap.unit == "eV" and gap.conformal is not None
    assert set(gap.elements) == {"H", "C", "N", "O", "F", "P", "S", "Cl", "Br"}


def test_gap_agrees_with_live_gfn2_xtb(gap):
    from triscale.quantum.electronic import electronic_structure

    mols = [molecule(n) for n in NAMES]
    ref = np.array([electronic_structure(a, "gfn2-xtb").gap_eV for a in mols])
    mean, std = gap.predict(mols, return_std=True)
    assert np.abs(mean - ref).mean() < 0.6, (mean, ref)  # held-out test MAE of the committee: 0.45 eV
    assert (std > 0).all()
    lo, hi = gap.interval(mean, std)
    assert ((ref >= lo) & (ref <= hi)).sum() >= 4  # the 90 % conformal interval


def test_committee_is_rotation_invariant(gap):
    a = molecule("C4H4S")
    b = a.copy()
    b.rotate(41, (1, 2, 3))
    assert np.allclose(gap.predict([a]), gap.predict([b]), atol=1e-4)


def test_predict_properties_reports_the_gap(call):
    r = call("predict_properties", structure_id="CH3COCH3")
    assert r.gap_eV is not None and r.gap_std_eV > 0
    lo, hi = r.gap_interval_eV
    assert lo < r.gap_eV < hi
    assert call("predict_properties", structure_id="CH3COCH3", gap=False).gap_eV is None
    cu = call("build_bulk", name="Cu")
    r = call("predict_properties", structure_id=cu.structure_id)
    assert r.gap_eV is None and any("periodic" in n for n in r.notes)


def test_cli_predict_with_property(tmp_path):
    from typer.testing import CliRunner

    from triscale.cli import app

    path = tmp_path / "acetone.xyz"
    molecule("CH3COCH3").write(path)
    result = CliRunner().invoke(app, ["predict", str(path), "--property", "gfn2-gap", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output[result.output.index("[") :])[0]
    assert 2.0 < row["gap_eV"] < 6.0 and row["gap_std_eV"] > 0  # GFN2-xTB: 3.94 eV
    bad = CliRunner().invoke(app, ["predict", str(path), "--property", "no-such-head"])
    assert bad.exit_code == 2 and "gfn2-gap" in bad.output
