"""Exact optima of nonsmooth linear models by linear programming (SciPy's HiGHS): the
independent reference for L-BFGS at kinks, shared by tests/test_convergence.py and
benchmarks/convergence.py. Sparse constraint matrices, so 5,000 samples stay cheap."""
from __future__ import annotations

import numpy as np


def _solve(cost, rows, bounds_rhs, free: int, equality: bool = False):
    from scipy.optimize import linprog
    from scipy.sparse import vstack
    matrix = vstack(rows).tocsr()
    limits = [(None, None)] * free + [(0, None)] * (len(cost) - free)
    lp = (linprog(cost, A_eq=matrix, b_eq=bounds_rhs, bounds=limits, method="highs") if equality
          else linprog(cost, A_ub=matrix, b_ub=bounds_rhs, bounds=limits, method="highs"))
    assert lp.status == 0, lp.message
    return lp


def l1_optimum(design, y):
    """(min over w of mean |design·w − y|, the minimising w): design·w + u − v = y, u, v ≥ 0."""
    from scipy.sparse import csr_matrix, eye, hstack
    n, p = design.shape
    lp = _solve(np.r_[np.zeros(p), np.ones(2 * n)] / n,
                [hstack([csr_matrix(design), eye(n), -eye(n)])], y, p, equality=True)
    return float(lp.fun), lp.x[:p]


def hinge_l1_optimum(x, y, penalty):
    """min over w of mean max(0, 1 − y·(x·w)) + penalty·Σ|w_j| (a sparse linear SVM): slacks
    ξ ≥ 1 − y·(x·w), ξ ≥ 0, and u ≥ |w|."""
    from scipy.sparse import csr_matrix, eye, hstack
    n, p = x.shape
    cost = np.r_[np.zeros(p), np.ones(n) / n, np.full(p, penalty)]
    margins = hstack([csr_matrix(-y[:, None] * x), -eye(n), csr_matrix((n, p))])
    above = hstack([eye(p), csr_matrix((p, n)), -eye(p)])
    below = hstack([-eye(p), csr_matrix((p, n)), -eye(p)])
    return float(_solve(cost, [margins, above, below], np.r_[-np.ones(n), np.zeros(2 * p)],
                        p).fun)
