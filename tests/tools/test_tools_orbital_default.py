"""orbital_energies without a calculator uses GFN2-xTB, also once 'auto' would pick the foundation model."""

from triscale.tools import calculators as calc_mod
from triscale.tools import call_tool, get_tool


def test_default_calculator_is_xtb_when_omitted_or_auto():
    model = get_tool("orbital_energies").input_model
    assert model.model_validate({"structure_id": "st1"}).calculator.method == "gfn2-xtb"
    assert model.model_validate({"structure_id": "st1", "calculator": "auto"}).calculator.method == "gfn2-xtb"


def test_omitted_calculator_with_a_shipped_checkpoint(ws, monkeypatch):
    # with a shipped checkpoint, 'auto' resolves to the foundation model, which gives no orbitals
    monkeypatch.setattr(calc_mod, "checkpoint_shipped", lambda name="triscale-base": True)
    r = call_tool("orbital_energies", {"structure_id": "water"}, ws)
    assert r.method == "gfn2-xtb" and r.gap_eV > 5
