"""ROAD's imputation solves: CHOLMOD (where installed) and SuperLU give the same values, and a failed or
missing CHOLMOD falls back to SuperLU silently."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
import torch

import camanim.road.imputation as imputation
from camanim.road.imputation import linear_imputation


def _case(seed: int = 0, shape: tuple[int, int] = (37, 53), masks: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(3, *shape, generator=gen)
    # blobs and salt-and-pepper, from 5% to 95% removed
    smooth = torch.nn.functional.interpolate(torch.rand(1, masks, 5, 7, generator=gen), size=shape,
                                             mode="bilinear")[0]
    noisy = torch.rand(masks, *shape, generator=gen)
    fractions = torch.linspace(0.05, 0.95, masks)[:, None, None]
    removed = torch.cat([smooth < smooth.flatten(1).quantile(fractions.flatten(), dim=1).diagonal()[:, None, None],
                         noisy < fractions])
    return img, removed


def _superlu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imputation._Cholmod, "load", classmethod(lambda cls: None))


def test_cholmod_and_superlu_impute_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    if imputation._Cholmod.load() is None:
        pytest.skip("CHOLMOD 3 (Debian's libcholmod3, `make solvers`) is not installed")
    img, removed = _case()
    img = img.double()
    fast = linear_imputation(img, removed)
    _superlu_only(monkeypatch)
    torch.testing.assert_close(fast, linear_imputation(img, removed), atol=1e-12, rtol=0)


def test_without_cholmod_superlu_solves(monkeypatch: pytest.MonkeyPatch) -> None:
    _superlu_only(monkeypatch)
    img = torch.zeros(1, 3, 3)
    img[0, 0, 0] = 9.0
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = True
    assert float(linear_imputation(img, mask)[0, 0, 1, 1]) == pytest.approx(0.75, abs=1e-12)


def test_a_wrong_cholmod_answer_is_solved_again_by_superlu(monkeypatch: pytest.MonkeyPatch) -> None:
    img, removed = _case(1)
    img = img.double()
    _superlu_only(monkeypatch)
    expected = linear_imputation(img, removed)

    class Wrong:
        def solve(self, matrix: scipy.sparse.csc_matrix, rhs: np.ndarray) -> np.ndarray:
            return np.ones_like(rhs)  # a binding gone wrong: caught by the residual check

    monkeypatch.setattr(imputation._Cholmod, "load", classmethod(lambda cls: Wrong()))
    torch.testing.assert_close(linear_imputation(img, removed), expected, atol=1e-12, rtol=0)


def test_cholmod_refuses_a_singular_matrix_without_printing(capfd: pytest.CaptureFixture[str]) -> None:
    cholmod = imputation._Cholmod.load()
    if cholmod is None:
        pytest.skip("CHOLMOD 3 (Debian's libcholmod3, `make solvers`) is not installed")
    matrix = scipy.sparse.csc_matrix(np.array([[1.0, 1.0], [1.0, 1.0]]))
    assert cholmod.solve(matrix, np.ones((2, 3))) is None
    out, err = capfd.readouterr()
    assert out == "" and err == ""
