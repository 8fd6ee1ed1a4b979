"""The unknown-calculator hint names each suggested method once (several aliases map to one method)."""

import pytest

from triscale.tools import ToolInputError
from triscale.tools.calculators import canonical_method


@pytest.mark.parametrize("typo", ["gfn3-xtb", "gfn2xtbb", "gfn-xtb"])
def test_near_miss_suggestions_are_unique(typo):
    with pytest.raises(ToolInputError) as info:
        canonical_method(typo)
    hint = info.value.hint
    assert "did you mean" in hint
    suggested = hint.split("did you mean ", 1)[1].rstrip("?)").split(", ")
    assert suggested and len(suggested) == len(set(suggested)), hint
    assert "'gfn2-xtb'" in suggested
