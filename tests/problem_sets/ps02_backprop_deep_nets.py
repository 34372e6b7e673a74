"""Plausible wrong answers to problem set 2 (backpropagation through deep networks): each is the solution with
one classic mistake.

Every mistake is a small edit of the solution cell (see ``solution_editor``).
"""
from __future__ import annotations

from tests.problem_sets import WrongAnswer, solution_editor

_edit = solution_editor("ps02_backprop_deep_nets", "ps02.ipynb")


WRONG_ANSWERS = {
    "layer backward: the tanh derivative (1 - tanh²) is forgotten": WrongAnswer(
        cells=_edit("linear_tanh_backward", ("delta = (1 - torch.tanh(a) ** 2) * grad_h", "delta = grad_h")),
        loses=("test_linear_tanh_backward", "test_mlp_backward"),
    ),
    "layer backward: the derivative taken at the pre-activation, 1 - a² instead of 1 - tanh(a)²": WrongAnswer(
        cells=_edit("linear_tanh_backward", ("(1 - torch.tanh(a) ** 2)", "(1 - a ** 2)")),
        loses=("test_linear_tanh_backward",),
    ),
    "layer backward: Wᵀ where W belongs in ∂L/∂x (a shape error)": WrongAnswer(
        cells=_edit("linear_tanh_backward", ("grad_x = delta @ W ", "grad_x = delta @ W.T ")),
        loses=("test_linear_tanh_backward", "test_mlp_backward"),
    ),
    "layer backward: ∂L/∂W transposed, xᵀδ instead of δᵀx": WrongAnswer(
        cells=_edit("linear_tanh_backward", ("grad_W = delta.T @ x", "grad_W = x.T @ delta")),
        loses=("test_linear_tanh_backward", "test_mlp_backward"),
    ),
    "layer backward: the bias gradient averaged over the batch instead of summed": WrongAnswer(
        cells=_edit("linear_tanh_backward", ("grad_b = delta.sum(dim=0)", "grad_b = delta.mean(dim=0)")),
        loses=("test_linear_tanh_backward",),
    ),
    "network backward: summing instead of averaging over the batch, ∂L/∂h_L = h_L - y": WrongAnswer(
        cells=_edit("mlp_backward", ("grad_h = (hs[-1] - y) / x.shape[0]", "grad_h = hs[-1] - y")),
        loses=("test_mlp_backward",),
    ),
    "network backward: each layer is given its own output instead of its input": WrongAnswer(
        cells=_edit("mlp_backward",
                    ("linear_tanh_backward(hs[l], weights[l]", "linear_tanh_backward(hs[l + 1], weights[l]")),
        loses=("test_mlp_backward",),
    ),
    "gradient norms: listed from the last layer to the first": WrongAnswer(
        cells=_edit("layer_gradient_norms", ("for g in grads])", "for g in reversed(grads)])")),
        loses=("test_layer_norms",),
    ),
    "growth factor: ReLU's factor 1/2 is forgotten": WrongAnswer(
        cells=_edit("growth_factor", ('{"linear": 1.0, "relu": 0.5}', '{"linear": 1.0, "relu": 1.0}'),
                    ("critical_c_relu = 2.0", "critical_c_relu = 1.0")),
        loses=("test_growth_factor",),
    ),
    "growth factor: the norm's factor √(c·E[σ'²]) instead of the squared norm's": WrongAnswer(
        cells=_edit("growth_factor", ("return c * derivative_squared", "return (c * derivative_squared) ** 0.5")),
        loses=("test_growth_factor",),
    ),
    "predicted ratio: n_layers - 1 backward steps instead of n_layers": WrongAnswer(
        cells=_edit("predicted_ratio", ("** (n_layers / 2)", "** ((n_layers - 1) / 2)")),
        loses=("test_predicted_ratio",),
    ),
}
