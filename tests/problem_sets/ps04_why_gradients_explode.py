"""Plausible wrong answers to problem set 4 (Jacobian products, the λ₁-versus-1/γ conditions, the loss cliff)."""
from __future__ import annotations

from tests.problem_sets import WrongAnswer


def _step_jacobian(slope: str, product: str = "slope[:, None] * W_hh") -> str:
    return f'''
def step_jacobian(W_hh, a_t, activation):
    if activation == "linear":
        slope = torch.ones_like(a_t)
    elif activation == "tanh":
        slope = {slope}
    else:
        s = torch.sigmoid(a_t)
        slope = s * (1.0 - s)
    return {product}
'''


def _classify(quantity: str, above: str = "may explode") -> str:
    return f'''
def classify(W, activation):
    rho = torch.linalg.eigvals(W).abs().max().item()
    lambda_1 = torch.linalg.matrix_norm(W, ord=2).item()
    x = {quantity}
    if x < 1.0 - TOL:
        return "vanishing"
    if x > 1.0 + TOL:
        return "{above}"
    return "neither"
'''


_CORRECT_TANH = "1.0 - torch.tanh(a_t) ** 2"

WRONG_ANSWERS = {
    "the spectral radius instead of the largest singular value in the nonlinear conditions": WrongAnswer(
        cells={"classify": _classify("rho if activation == 'linear' else derivative_bound(activation) * rho")},
        loses=("test_classify",),
    ),
    "the largest singular value in the linear case too (ρ governs W^n there)": WrongAnswer(
        cells={"classify": _classify("derivative_bound(activation) * lambda_1")},
        loses=("test_classify",),
    ),
    "ignoring γ: a derivative bound of 1 for the sigmoid": WrongAnswer(
        cells={"derivative_bound": '''
def derivative_bound(activation):
    return 1.0
'''},
        loses=("test_derivative_bound", "test_classify"),
    ),
    "calling λ₁ > 1/γ 'will explode' (a necessary condition read as sufficient)": WrongAnswer(
        cells={"classify": _classify("rho if activation == 'linear' else derivative_bound(activation) * lambda_1",
                                     above="will explode")},
        loses=("test_classify",),
    ),
    "the Jacobian product multiplied in the wrong order, J_{k+1} ⋯ J_T": WrongAnswer(
        cells={"jacobian_product": '''
def jacobian_product(W_hh, a, k, activation):
    T, H = a.shape
    product = torch.eye(H)
    for t in range(k + 1, T + 1):
        product = product @ step_jacobian(W_hh, a[t - 1], activation)
    return product
'''},
        loses=("test_jacobian_product", "test_jacobian_norms"),
    ),
    "the step Jacobian without the diag(σ') factor": WrongAnswer(
        cells={"step_jacobian": '''
def step_jacobian(W_hh, a_t, activation):
    return W_hh.clone()
'''},
        loses=("test_step_jacobian", "test_jacobian_product", "test_jacobian_norms"),
    ),
    "diag(σ') on the wrong side: W_hh diag(σ') scales columns": WrongAnswer(
        cells={"step_jacobian": _step_jacobian(_CORRECT_TANH, product="W_hh * slope[None, :]")},
        loses=("test_step_jacobian", "test_jacobian_product"),
    ),
    "tanh' evaluated at h_t = tanh(a_t) instead of at a_t": WrongAnswer(
        cells={"step_jacobian": _step_jacobian("1.0 - torch.tanh(torch.tanh(a_t)) ** 2")},
        loses=("test_step_jacobian", "test_jacobian_product"),
    ),
    "the Frobenius norm instead of the spectral norm": WrongAnswer(
        cells={"jacobian_product_norms": '''
def jacobian_product_norms(W_hh, a, activation):
    return torch.stack([torch.linalg.matrix_norm(jacobian_product(W_hh, a, k, activation))
                        for k in range(a.shape[0] + 1)])
'''},
        loses=("test_jacobian_norms",),
    ),
    "delegating the Jacobian product to autograd": WrongAnswer(
        cells={"jacobian_product": '''
def jacobian_product(W_hh, a, k, activation):
    sigma = {"linear": lambda v: v, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    T, H = a.shape
    inputs = [a[t - 1] - W_hh @ (sigma(a[t - 2]) if t > 1 else torch.zeros(H)) for t in range(1, T + 1)]

    def run(h):
        for t in range(k + 1, T + 1):
            h = sigma(W_hh @ h + inputs[t - 1])
        return h

    return torch.autograd.functional.jacobian(run, torch.zeros(H) if k == 0 else sigma(a[k - 1]))
'''},
        loses=("test_jacobian_product",),
    ),
    "the wall without x0: b = -w σ(x0)": WrongAnswer(
        cells={"wall_bias": '''
def wall_bias(w, x0=0.5):
    s = 1.0 / (1.0 + math.exp(-x0))
    if w * s * (1.0 - s) <= 1.0:
        return math.nan
    return -w * s
'''},
        loses=("test_wall_bias", "test_cliff_answers"),
    ),
    "a wall at every w, even where the fixed point attracts": WrongAnswer(
        cells={"wall_bias": '''
def wall_bias(w, x0=0.5):
    return x0 - w / (1.0 + math.exp(-x0))
'''},
        loses=("test_wall_bias",),
    ),
    "∂x_t/∂w without the direct term σ(x_{t-1})": WrongAnswer(
        cells={"cliff_loss_and_grad": '''
def cliff_loss_and_grad(w, b, x0=0.5, T=50, target=0.7):
    x, dx_dw, dx_db = x0, 0.0, 0.0
    for _ in range(T):
        s = 1.0 / (1.0 + math.exp(-x))
        slope = w * s * (1.0 - s)
        dx_dw = slope * dx_dw
        dx_db = 1.0 + slope * dx_db
        x = w * s + b
    s = 1.0 / (1.0 + math.exp(-x))
    dL_dx = 2.0 * (s - target) * s * (1.0 - s)
    return (s - target) ** 2, dL_dx * dx_dw, dL_dx * dx_db
'''},
        loses=("test_cliff_grad", "test_cliff_answers"),
    ),
}
