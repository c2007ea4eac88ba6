"""Edge data: n = 0, n = 1, NaN and ±inf inputs, arguments at the edge of the float range
(1e300 in float64, 1e38 in float32). Each backend must follow the rules of
docs/semantics.md ("NaN, infinities and the edges of the float range"), checked against the
50-digit reference with NaN matching NaN and an infinity the same infinity.

All models of a backend are built together (one gcc call per precision, one Swift package).
"""
from __future__ import annotations

import math

import pytest

from gradforge.backend import Case
from gradforge.project import ProjectSpec

from conftest import IN_CI, require_tool
from differential import rows
from fuzzing import run_c, run_metal, run_numpy, run_swift, subject_for

NAN, INF = math.nan, math.inf

#: Every non-smooth function at a NaN input, with the value the rule gives (b = -0.3, a = 0.6).
NAN_RULE = {
    "sign(x)": NAN, "abs(x)": NAN, "exp(x)": NAN, "tanh(x)": NAN, "sqrt(x)": NAN,
    "relu(x)": 0.0, "max(x, b)": -0.3, "max(b, x)": NAN, "min(x, b)": -0.3, "min(b, x)": NAN,
    "clip(x, -1, 1)": NAN, "where(x > 0, a, b)": -0.3, "where(not (x > 0), a, b)": 0.6,
    "sigmoid(x)": NAN, "softplus(x)": NAN, "max(x, a, b)": 0.6,
}

GENERAL = "a*x + b + sigmoid(a*x) + softplus(b - x) + relu(x - a) + abs(b*x) + sign(x)*a + " \
          "max(a*x, b) + clip(x, -1, 1)*b"
#: Saturating models: with these infinite inputs J stays finite, so the gradient is the limit.
SATURATING = {
    "sat_pos": ("sigmoid(x + a) + softplus(b - x) + clip(x, -1, 1)*a + where(x > 0, a, b) "
                "+ max(b - x, a) + exp(-relu(x))*b", INF),
    "sat_neg": ("sigmoid(x + a) + softplus(x + b) + relu(x - a) + max(x, b) + "
                "where(x > 0, a, b)*a + clip(x, b, a)", -INF),
}
LARGE = "sigmoid(a*x) + softplus(-a*abs(x)) + tanh(x*b) + exp(-abs(x)) + a*b + 1e-3*log(1 + abs(x))"


def project(name: str, prediction: str, precision: str, loss="(prediction - y)**2/2",
            regularization="0.01*(a**2 + b**2)") -> ProjectSpec:
    return ProjectSpec.create(name=name, precision=precision,
                              parameters={"a": 0.6, "b": -0.3}, inputs={"x": {}},
                              targets={"y": {}}, prediction=prediction, loss=loss,
                              regularization=regularization)


def case(xs, ys=None, params=(0.6, -0.3)) -> Case:
    ys = [0.25] * len(xs) if ys is None else ys
    return Case(tuple(params), {"x": rows(*xs), "y": rows(*ys)}, {})


def with_weights(c: Case) -> Case:
    return Case(c.params + (1.0,) * len(NAN_RULE), c.data, c.constants)


def subjects(precision: str) -> list:
    big = 1e300 if precision == "float64" else 1e38
    out = [
        subject_for(project(f"general_{precision[-2:]}", GENERAL, precision),
                    [case([]), case([0.7]), case([0.3, NAN, -1.2]), case([INF, 0.5]),
                     case([-INF]), case([big, -big, 0.1])], ),
        subject_for(project(f"large_{precision[-2:]}", LARGE, precision),
                    [case([big, -big, 0.5]), case([big / 7, 3.0])]),
    ]
    for name, (prediction, inf) in SATURATING.items():
        out.append(subject_for(project(f"{name}_{precision[-2:]}", prediction, precision),
                               [case([inf, 0.4]), case([inf])]))
    out.append(subject_for(nan_rule_project(precision),
                           [with_weights(case(xs)) for xs in ([NAN], [NAN, 0.8], [0.8])]))
    return out


def nan_rule_project(precision: str) -> ProjectSpec:
    """Every function of NAN_RULE in one model: e<i> is function i, the prediction
    Σ w[i]·e<i> and J = mean(prediction), so ∂J/∂w[i] is the value of function i."""
    functions = list(NAN_RULE)
    return ProjectSpec.create(
        name=f"nanrule_{precision[-2:]}", precision=precision,
        parameters={"a": 0.6, "b": -0.3, "w": {"shape": [len(functions)], "init": 1.0}},
        inputs={"x": {}}, targets={"y": {}},
        definitions={f"e{i}": f for i, f in enumerate(functions)},
        prediction=" + ".join(f"w[{i}]*e{i}" for i in range(len(functions))),
        loss="prediction + 0*y")


def check_rules(subject) -> None:
    """The reference itself follows the documented rules (the table above, finite limits)."""
    if subject.name.startswith("nanrule"):
        values = subject.expected[0].gradient[2:]          # ∂J/∂w[i] at x = NaN (n = 1)
        for (function, want), got in zip(NAN_RULE.items(), values):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want), \
                function
    if subject.name.startswith("sat") or subject.name.startswith("large"):
        for e in subject.expected:
            assert math.isfinite(e.objective)
            assert all(math.isfinite(g) for g in e.gradient), subject.name
    if subject.name.startswith("general"):
        empty = subject.expected[0]
        assert empty.objective == pytest.approx(0.01 * (0.36 + 0.09)) and empty.predictions == ()
        assert math.isnan(subject.expected[2].objective)
        assert subject.expected[3].objective == INF


def significant(subject) -> dict[str, str]:
    """Failures that the rules cover: with an infinite objective the gradient is not
    specified (docs/semantics.md), so only objective and predictions are compared there."""
    out = {}
    for backend, problem in subject.failures.items():
        lines = [l for l in problem.splitlines()
                 if not (l.split(":")[1].strip().startswith(("gradient", "step"))
                         and math.isinf(subject.expected[int(l.split()[1].rstrip(":"))].objective))]
        if lines:
            out[backend] = "\n".join(lines)
    return out


@pytest.fixture(scope="module")
def prepared():
    return {p: subjects(p) for p in ("float64", "float32")}


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_reference_follows_the_documented_rules(precision, prepared):
    for subject in prepared[precision]:
        check_rules(subject)


@pytest.mark.parametrize("backend", ["numpy", "c", "swift", "metal"])
def test_backends_follow_the_edge_rules(backend, prepared, registry, tmp_path):
    tools = registry.backend(backend).toolchains()
    if not all(t.available for t in tools):
        (pytest.fail if IN_CI else pytest.skip)(f"toolchain missing: {tools}")
    if backend == "c":
        require_tool("gcc")
    everything = []
    for precision in ("float64", "float32"):
        if backend == "metal" and precision == "float64":
            continue
        group = prepared[precision]
        for s in group:
            s.failures.clear()
        if backend == "numpy":
            run_numpy(registry, group, tmp_path)
        elif backend == "c":
            run_c(group, tmp_path, train=False)
        elif backend == "metal":
            run_metal(registry, group, tmp_path)
        everything += group
    if backend == "swift":
        run_swift(registry, everything, tmp_path)
    problems = {s.name: significant(s) for s in everything}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())
