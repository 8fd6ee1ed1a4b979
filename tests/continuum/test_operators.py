"""Neural operators: exact p4/p4m equivariance of the G-FNO (float64, random weights), the FNO is not equivariant."""

import pytest
import torch

from triscale.continuum.operators import (
    FNO,
    GFNO,
    Group,
    GroupSpectralConv,
    OperatorConfig,
    build_operator,
    transform_field,
)

TOL = 1e-10


def _random_model(cfg, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_operator(cfg).double()
        with torch.no_grad():  # perturb every parameter (biases start at zero)
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _equivariance_errors(model, x, group):
    with torch.no_grad():
        y = model(x)
        errs = []
        for s, r in group.elements:
            yt = model(transform_field(x, r, bool(s)))
            errs.append(float((yt - transform_field(y, r, bool(s))).norm() / y.norm()))
    return errs


def _x(shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n", [16, 17])
def test_gfno_p4_equivariant(n):
    cfg = OperatorConfig(kind="gfno", group="p4", width=5, modes=5, n_layers=3, proj_width=16, grid="invariant")
    model = _random_model(cfg)
    errs = _equivariance_errors(model, _x((3, 1, n, n)), Group("p4"))
    assert max(errs) < TOL
    # the output is not rotation invariant (so the check is not trivially satisfied)
    with torch.no_grad():
        x = _x((3, 1, n, n))
        assert float((model(transform_field(x, 1)) - model(x)).norm() / model(x).norm()) > 1e-2


def test_gfno_p4m_equivariant_with_padding_and_boundary_feature():
    cfg = OperatorConfig(
        kind="gfno", group="p4m", width=4, modes=4, n_layers=2, proj_width=8, padding=3, grid="boundary", domain="box"
    )
    errs = _equivariance_errors(_random_model(cfg), _x((2, 1, 21, 21)), Group("p4m"))
    assert len(errs) == 8
    assert max(errs) < TOL


def test_p4_model_is_not_reflection_equivariant():
    cfg = OperatorConfig(kind="gfno", group="p4", width=4, modes=4, n_layers=2, proj_width=8)
    errs = _equivariance_errors(_random_model(cfg), _x((2, 1, 16, 16)), Group("p4m"))
    assert max(errs[:4]) < TOL
    assert min(errs[4:]) > 1e-3


def test_equivariance_check_catches_unrotated_kernels(monkeypatch):
    cfg = OperatorConfig(kind="gfno", group="p4", width=4, modes=4, n_layers=2, proj_width=8)
    model = _random_model(cfg)

    def broken(self):  # shift the group axis but forget to rotate the kernels
        w = torch.view_as_complex(self.weight)
        return torch.stack(
            [w if self.lifting else w[:, :, self.group.inv_mul[h]] for h in range(self.group.order)], dim=1
        )

    monkeypatch.setattr(GroupSpectralConv, "full_kernel", broken)
    assert max(_equivariance_errors(model, _x((2, 1, 16, 16)), Group("p4"))) > 1e-3


def test_gfno_p4m_equivariant_with_periodic_invariant_features():
    cfg = OperatorConfig(kind="gfno", group="p4m", width=3, modes=4, n_layers=2, proj_width=8, grid="invariant")
    assert max(_equivariance_errors(_random_model(cfg), _x((2, 1, 18, 18)), Group("p4m"))) < TOL


@pytest.mark.parametrize("grid", ["none", "xy"])
def test_fno_is_not_equivariant(grid):
    cfg = OperatorConfig(kind="fno", width=8, modes=4, n_layers=2, proj_width=8, grid=grid)
    errs = _equivariance_errors(_random_model(cfg), _x((2, 1, 16, 16)), Group("p4"))
    assert max(errs[1:]) > 1e-4


def test_group_tables():
    for name, order in (("p4", 4), ("p4m", 8)):
        g = Group(name)
        assert g.order == order
        x = _x((1, 1, 5, 5))
        for i in range(order):
            # inv_mul rows are permutations, and apply() is a homomorphism
            assert sorted(g.inv_mul[i]) == list(range(order))
            assert torch.equal(g.apply(g.apply(x, i), g.inverse(i)), x)
            for j in range(order):
                k = g.index(g.mats[i] @ g.mats[j])
                assert torch.equal(g.apply(g.apply(x, j), i), g.apply(x, k))


def test_operators_are_discretisation_agnostic_and_validate_config():
    fno = FNO(OperatorConfig(dim=1, width=4, modes=4, n_layers=1, proj_width=4, grid="xy"))
    assert fno(torch.randn(2, 1, 32)).shape == (2, 1, 32)
    assert fno(torch.randn(2, 1, 64)).shape == (2, 1, 64)
    g = GFNO(OperatorConfig(kind="gfno", width=2, modes=3, n_layers=1, proj_width=4))
    assert g(torch.randn(1, 1, 12, 12)).shape == (1, 1, 12, 12)
    with pytest.raises(ValueError, match="grid"):
        g(torch.randn(1, 1, 6, 6))  # 2*3+1 modes do not fit
    with pytest.raises(ValueError, match="equivariance"):
        GFNO(OperatorConfig(kind="gfno", grid="xy"))
    with pytest.raises(ValueError, match="pad_mode"):
        GFNO(OperatorConfig(kind="gfno", padding=2, pad_mode="end"))
    with pytest.raises(ValueError, match="group"):
        Group("p6")
