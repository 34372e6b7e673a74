"""labkit.quadratic against independent references: NumPy linear algebra, a hand-written NumPy descent loop,
torch.nn.functional.mse_loss and autograd's Hessian."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labkit.quadratic import Quadratic, gradient_descent, growth_rate, rotation_2d

pytestmark = pytest.mark.filterwarnings("error")


def random_quadratic(n, seed, lo=0.5, hi=8.0):
    """A quadratic with known eigenvalues in [lo, hi], a random basis and a random minimizer."""
    gen = torch.Generator().manual_seed(seed)
    eigenvalues = torch.empty(n, dtype=torch.float64).uniform_(lo, hi, generator=gen)
    basis, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    minimizer = torch.randn(n, generator=gen, dtype=torch.float64)
    return Quadratic.from_eigenvalues(eigenvalues, basis=basis, minimizer=minimizer), eigenvalues, basis, minimizer


def numpy_descent(A, b, theta0, lr, steps):
    """The reference: θ ← θ − η(Aθ − b), in NumPy, no autograd."""
    A, b, theta = A.numpy(), b.numpy(), theta0.numpy().copy()
    iterates = [theta.copy()]
    for _ in range(steps):
        theta = theta - lr * (A @ theta - b)
        iterates.append(theta.copy())
    return np.array(iterates)


@pytest.mark.parametrize("n, seed", [(1, 0), (2, 1), (5, 2)])
def test_from_eigenvalues_builds_the_requested_spectrum_and_minimizer(n, seed):
    q, eigenvalues, basis, minimizer = random_quadratic(n, seed)
    np.testing.assert_allclose(np.linalg.eigvalsh(q.A.numpy()), np.sort(eigenvalues.numpy()), rtol=1e-12)
    np.testing.assert_allclose(q.minimizer.numpy(), minimizer.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(q.A.numpy() @ basis.numpy(), basis.numpy() * eigenvalues.numpy(), atol=1e-12)
    assert q.lambda_max == pytest.approx(eigenvalues.max().item(), rel=1e-12)
    assert q.lambda_min == pytest.approx(eigenvalues.min().item(), rel=1e-12)
    assert q.critical_lr == pytest.approx(2 / eigenvalues.max().item(), rel=1e-12)
    assert q.condition_number == pytest.approx((eigenvalues.max() / eigenvalues.min()).item(), rel=1e-12)


def test_value_gradient_and_minimum_match_the_formulas_and_autograd():
    q, *_ = random_quadratic(4, seed=3)
    A, b = q.A.numpy(), q.b.numpy()
    thetas = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for theta in thetas:
        t = theta.numpy()
        assert q(theta).item() == pytest.approx(0.5 * t @ A @ t - b @ t, rel=1e-12)
        np.testing.assert_allclose(q.grad(theta).numpy(), A @ t - b, rtol=1e-12, atol=1e-12)
        leaf = theta.clone().requires_grad_(True)
        (autograd_grad,) = torch.autograd.grad(q(leaf), leaf)
        torch.testing.assert_close(autograd_grad, q.grad(theta), rtol=1e-12, atol=1e-12)
    # batched evaluation equals row-by-row evaluation
    torch.testing.assert_close(q(thetas), torch.stack([q(t) for t in thetas]))
    assert q.minimum == pytest.approx(q(q.minimizer).item(), rel=1e-12)
    assert q.grad(q.minimizer).abs().max().item() < 1e-12


def test_float32_parameters_are_evaluated_in_float32():
    q, *_ = random_quadratic(3, seed=4)
    theta = torch.ones(3, dtype=torch.float32)
    assert q(theta).dtype == torch.float32 and q.grad(theta).dtype == torch.float32


def test_least_squares_is_the_mse_loss_and_its_hessian():
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    y = torch.randn(40, generator=gen, dtype=torch.float64)
    q = Quadratic.least_squares(X, y)

    def mse(theta):
        return F.mse_loss(X @ theta[:3] + theta[3], y)

    for theta in torch.randn(5, 4, generator=gen, dtype=torch.float64):
        assert q(theta).item() == pytest.approx(mse(theta).item(), rel=1e-12)
    hessian = torch.autograd.functional.hessian(mse, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(q.A, hessian, rtol=1e-12, atol=1e-12)
    # its minimizer is the least-squares solution
    design = np.hstack([X.numpy(), np.ones((40, 1))])
    expected, *_ = np.linalg.lstsq(design, y.numpy(), rcond=None)
    np.testing.assert_allclose(q.minimizer.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert Quadratic.least_squares(X, y, bias=False).dim == 3


@pytest.mark.parametrize("scaled_lr", [0.3, 0.9, 1.0, 1.5, 1.99, 2.2])
def test_gradient_descent_matches_a_numpy_loop_and_the_closed_form(scaled_lr):
    q, *_ = random_quadratic(5, seed=6)
    lr = scaled_lr / q.lambda_max
    theta0 = torch.linspace(-1.0, 2.0, 5, dtype=torch.float64)
    run = gradient_descent(q, theta0, lr, steps=40)
    reference = numpy_descent(q.A, q.b, theta0, lr, 40)
    np.testing.assert_allclose(run.iterates.numpy(), reference, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(q.predicted_iterates(theta0, lr, 40).numpy(), reference, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(run.losses.numpy(), [q(torch.from_numpy(t)).item() for t in reference], rtol=1e-9)
    grads = reference @ q.A.numpy() - q.b.numpy()
    np.testing.assert_allclose(run.grad_norms.numpy(), np.linalg.norm(grads, axis=1), rtol=1e-9, atol=1e-12)
    assert run.steps == 40 and not run.diverged and run.lr == lr


def test_gradient_descent_leaves_its_start_and_records_unchanged_and_detached():
    q, *_ = random_quadratic(3, seed=7)
    theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    before = theta0.clone()
    run = gradient_descent(q, theta0, 0.1, steps=5)
    torch.testing.assert_close(theta0, before, rtol=0, atol=0)
    assert not theta0.requires_grad and not run.iterates.requires_grad and not run.losses.requires_grad
    assert len({tuple(row.tolist()) for row in run.iterates}) == 6  # six different iterates, none overwritten


def test_gradient_descent_on_a_non_quadratic_function_uses_its_true_gradient():
    # f(θ) = Σ θ⁴/4 + θ₀θ₁, ∇f = θ³ + (θ₁, θ₀, 0)
    def f(theta):
        return (theta**4).sum() / 4 + theta[0] * theta[1]

    theta = np.array([0.8, -0.4, 0.3])
    run = gradient_descent(f, torch.tensor(theta), 0.05, steps=20)
    for k in range(21):
        np.testing.assert_allclose(run.iterates[k].numpy(), theta, rtol=1e-12, atol=1e-14)
        theta = theta - 0.05 * (theta**3 + np.array([theta[1], theta[0], 0.0]))


def test_a_diverging_run_stops_with_its_finite_part_and_no_warning():
    q = Quadratic.from_eigenvalues([1.0, 100.0])
    run = gradient_descent(q, torch.tensor([1.0, 1.0], dtype=torch.float64), lr=1.0, steps=1000)
    assert run.diverged and 10 < run.steps < 1000
    assert torch.isfinite(run.iterates).all() and torch.isfinite(run.losses).all()
    # it grew by |1 − ηλ_max| = 99 per step until it overflowed
    assert growth_rate(run.grad_norms) == pytest.approx(99.0, rel=1e-9)


@pytest.mark.parametrize("scaled_lr", [2.1, 2.4, 3.0, 4.0])
def test_divergence_rate_is_one_minus_eta_lambda_max(scaled_lr):
    q, *_ = random_quadratic(6, seed=8)
    lr = scaled_lr / q.lambda_max
    run = gradient_descent(q, torch.ones(6, dtype=torch.float64), lr, steps=120)
    expected = abs(1 - lr * q.lambda_max)
    assert q.contraction(lr) == pytest.approx(expected, rel=1e-12)
    assert growth_rate(run.grad_norms) == pytest.approx(expected, rel=1e-6)
    assert growth_rate(torch.linalg.vector_norm(run.iterates - q.minimizer, dim=1)) == pytest.approx(expected, rel=1e-6)


def test_contraction_is_the_spectral_radius_of_the_step_matrix():
    q, *_ = random_quadratic(4, seed=9)
    for lr in np.linspace(0.01, 1.5 * q.critical_lr, 13):
        step_matrix = np.eye(4) - lr * q.A.numpy()
        assert q.contraction(lr) == pytest.approx(np.abs(np.linalg.eigvals(step_matrix)).max(), rel=1e-10)
    rates = [q.contraction(lr) for lr in np.linspace(0.01, q.critical_lr * 0.999, 500)]
    assert min(rates) == pytest.approx((q.condition_number - 1) / (q.condition_number + 1), rel=1e-3)
    assert q.contraction(q.optimal_lr) == pytest.approx((q.condition_number - 1) / (q.condition_number + 1))


def test_regimes_follow_eta_lambda_max():
    q = Quadratic.from_eigenvalues([1.0, 4.0])
    expected = {0.1: "monotone", 0.25: "monotone", 0.3: "oscillating", 0.49: "oscillating",
                0.5: "marginal", 0.51: "diverging", 2.0: "diverging"}
    assert {lr: q.regime(lr) for lr in expected} == expected
    assert q.regime(0.5 * (1 + 1e-12)) == "marginal"  # 2/λ_max computed with rounding is still on the edge


def test_marginal_rate_gives_a_two_cycle():
    q = Quadratic.from_eigenvalues([1.0, 4.0], basis=rotation_2d(0.3))
    run = gradient_descent(q, torch.tensor([1.0, 1.0], dtype=torch.float64), q.critical_lr, steps=200)
    top = q.eigen_components(run.iterates)[:, 1]
    np.testing.assert_allclose(top[-2:].abs().numpy(), top[0].abs().item(), rtol=1e-9)
    assert top[-1] * top[-2] < 0


def test_growth_rate_fits_the_tail_of_a_geometric_sequence():
    k = np.arange(60)
    assert growth_rate(3.0 * 1.3**k) == pytest.approx(1.3, rel=1e-12)
    # an early transient (a faster-decaying term) does not bias the fit of the tail
    assert growth_rate(0.9**k + 5.0 * 0.5**k) == pytest.approx(0.9, rel=1e-6)
    assert growth_rate(torch.tensor([2.0, 1.0])) == pytest.approx(0.5)


@pytest.mark.parametrize("values, match", [([1.0], "at least 2"), ([1.0, 0.0], "positive and finite"),
                                           ([1.0, float("inf")], "positive and finite")])
def test_growth_rate_rejects_what_has_no_logarithm(values, match):
    with pytest.raises(ValueError, match=match):
        growth_rate(values)


def test_bad_quadratics_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="symmetric"):
        Quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.zeros(2))
    with pytest.raises(ValueError, match="positive definite"):
        Quadratic(torch.tensor([[1.0, 0.0], [0.0, -1.0]]), torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        Quadratic(torch.eye(2), torch.zeros(3))
    with pytest.raises(ValueError, match="square"):
        Quadratic(torch.ones(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        Quadratic(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]), torch.zeros(2))
    with pytest.raises(TypeError, match="numbers"):
        Quadratic("A", torch.zeros(2))
    with pytest.raises(ValueError, match="> 0"):
        Quadratic.from_eigenvalues([1.0, 0.0])
    with pytest.raises(ValueError, match="orthogonal"):
        Quadratic.from_eigenvalues([1.0, 2.0], basis=torch.ones(2, 2))
    with pytest.raises(ValueError, match="dependent|positive definite"):
        Quadratic.least_squares(torch.ones(5, 1), torch.zeros(5))  # a constant feature duplicates the bias


def test_bad_descent_arguments_are_rejected_with_a_reason():
    q = Quadratic.from_eigenvalues([1.0, 2.0])
    start = torch.zeros(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(q, start, 0.0, 5)
    with pytest.raises(ValueError, match="lr"):
        q.regime(-1.0)
    with pytest.raises(TypeError, match="theta0"):
        gradient_descent(q, [0.0, 0.0], 0.1, 5)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        gradient_descent(q, torch.zeros(1, 2), 0.1, 5)
    with pytest.raises(ValueError, match="scalar"):
        gradient_descent(lambda theta: theta * 2, start, 0.1, 5)
    with pytest.raises(ValueError, match="does not depend"):
        gradient_descent(lambda theta: theta.detach().sum(), start, 0.1, 5)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        q(torch.zeros(3))


def test_rotation_2d_is_orthogonal_and_turns_the_eigenvectors():
    R = rotation_2d(math.pi / 6)
    torch.testing.assert_close(R.T @ R, torch.eye(2, dtype=torch.float64))
    q = Quadratic.from_eigenvalues([1.0, 3.0], basis=R)
    top = q.eigenvectors[:, 1]
    assert abs(float(top @ torch.tensor([-0.5, math.sqrt(3) / 2], dtype=torch.float64))) == pytest.approx(1.0)
