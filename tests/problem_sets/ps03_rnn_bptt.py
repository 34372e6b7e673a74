"""Plausible wrong answers to problem set 3 (RNNs and BPTT): each is the solution with one classic mistake.

Every mistake is a small edit of the solution cell (see ``solution_editor``).
"""
from __future__ import annotations

from tests.problem_sets import WrongAnswer, solution_editor

_edit = solution_editor("ps03_rnn_bptt", "ps03.ipynb")


WRONG_ANSWERS = {
    "forward: the bias is left out": WrongAnswer(
        cells=_edit("rnn_forward", ("W_rec @ h + W_in @ x_t + b", "W_rec @ h + W_in @ x_t")),
        loses=("test_rnn_forward",),
    ),
    "autograd check: differentiates the sum of the states instead of Σ_t dL_dh_t · h_t": WrongAnswer(
        cells=_edit("autograd_gradients", ("(dL_dh * hs).sum()", "hs.sum()")),
        loses=("test_autograd_gradients",),
    ),
    "BPTT: the tanh derivative (1 - h²) is missing": WrongAnswer(
        cells=_edit("rnn_backward", ("g = (1 - hs[t] ** 2) * delta[t]", "g = delta[t]")),
        loses=("test_rnn_backward_delta", "test_rnn_backward_weights"),
    ),
    "BPTT: W_rec instead of W_recᵀ in the recursion": WrongAnswer(
        cells=_edit("rnn_backward", ("from_future = W_rec.T @ g", "from_future = W_rec @ g")),
        loses=("test_rnn_backward_delta", "test_rnn_backward_weights"),
    ),
    "BPTT: the weight gradients keep one step's term instead of summing over time": WrongAnswer(
        cells=_edit("rnn_backward",
                    ("grad_W_rec += torch.outer", "grad_W_rec = torch.outer"),
                    ("grad_W_in += torch.outer", "grad_W_in = torch.outer"),
                    ("grad_b += g", "grad_b = g")),
        loses=("test_rnn_backward_weights",),
    ),
    "BPTT: g_t paired with h_t instead of h_{t-1} in ∂L/∂W_rec": WrongAnswer(
        cells=_edit("rnn_backward", ("torch.outer(g, h_prev[t])", "torch.outer(g, hs[t])")),
        loses=("test_rnn_backward_weights",),
    ),
    "truncated BPTT: the state is not detached between chunks": WrongAnswer(
        cells=_edit("train_truncated", ("h = state.detach()", "h = state")),
        loses=("test_train_truncated",),
    ),
    "truncated BPTT: retain_graph=True instead of detach": WrongAnswer(
        cells=_edit("train_truncated",
                    ("h = state.detach()", "h = state"),
                    ("loss.backward()", "loss.backward(retain_graph=True)")),
        loses=("test_train_truncated",),
    ),
    "truncated BPTT: every chunk restarts from zeros instead of carrying the state": WrongAnswer(
        cells=_edit("train_truncated", ("model(x_chunk, h)", "model(x_chunk)")),
        loses=("test_train_truncated",),
    ),
    "truncated BPTT: gradients accumulate because they are never zeroed": WrongAnswer(
        cells=_edit("train_truncated", ("        optimizer.zero_grad()\n", "")),
        loses=("test_train_truncated",),
    ),
    "question: counts the steps of a full chunk (k) instead of the short last chunk": WrongAnswer(
        cells={"steps_with_gradient": "steps_with_gradient = 16"},
        loses=("test_steps_with_gradient",),
    ),
}
