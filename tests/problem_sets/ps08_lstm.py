"""Plausible wrong answers to problem set 8 (the LSTM cell, the cell-path gradient, training on the adding problem)."""
from __future__ import annotations

from tests.problem_sets import WrongAnswer


def _gates(unpack: str = "z_i, z_f, z_g, z_o", activations: str = "torch.sigmoid(z_i), torch.sigmoid(z_f), "
                                                                     "torch.tanh(z_g), torch.sigmoid(z_o)") -> str:
    return f'''
def lstm_gates(x, h, W_ih, W_hh, b_ih, b_hh):
    z = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh
    {unpack} = z.chunk(4, dim=1)
    return {activations}
'''


def _cell(c_new: str = "f * c + i * g", h_new: str = "o * torch.tanh(c_new)") -> str:
    return f'''
def lstm_cell(x, h, c, W_ih, W_hh, b_ih, b_hh):
    i, f, g, o = lstm_gates(x, h, W_ih, W_hh, b_ih, b_hh)
    c_new = {c_new}
    h_new = {h_new}
    return h_new, c_new
'''


WRONG_ANSWERS = {
    "the forget gate applied to the candidate and the input gate to the previous cell": WrongAnswer(
        cells={"lstm_cell": _cell(c_new="f * g + i * c")},
        loses=("test_lstm_cell", "test_run_lstm"),
    ),
    "tanh and sigmoid swapped on the candidate and the output gate": WrongAnswer(
        cells={"lstm_gates": _gates(activations="torch.sigmoid(z_i), torch.sigmoid(z_f), torch.sigmoid(z_g), "
                                                "torch.tanh(z_o)")},
        loses=("test_lstm_gates", "test_lstm_cell", "test_run_lstm"),
    ),
    "the gates read in the order (i, f, o, g) instead of torch's (i, f, g, o)": WrongAnswer(
        cells={"lstm_gates": _gates(unpack="z_i, z_f, z_o, z_g")},
        loses=("test_lstm_gates", "test_lstm_cell", "test_run_lstm"),
    ),
    "h_t = o_t ⊙ c_t, the cell not squashed by tanh": WrongAnswer(
        cells={"lstm_cell": _cell(h_new="o * c_new")},
        loses=("test_lstm_cell", "test_run_lstm"),
    ),
    "the old cell squashed before it is kept: c_t = f_t ⊙ tanh(c_{t-1}) + i_t ⊙ g_t": WrongAnswer(
        cells={"lstm_cell": _cell(c_new="f * torch.tanh(c) + i * g")},
        loses=("test_lstm_cell",),
    ),
    "the cell-path product includes f_k (off by one)": WrongAnswer(
        cells={"cell_path_gradient": '''
def cell_path_gradient(forget_gates):
    suffix = torch.flip(torch.cumprod(torch.flip(forget_gates, [1]), dim=1), [1])
    return torch.cat([torch.ones_like(suffix[:, :1]), suffix], dim=1)
'''},
        loses=("test_cell_path_gradient",),
    ),
    "the cell-path product accumulated from the start, f_1 ⋯ f_k, instead of from the end": WrongAnswer(
        cells={"cell_path_gradient": '''
def cell_path_gradient(forget_gates):
    prefix = torch.cumprod(forget_gates, dim=1)
    return torch.cat([torch.ones_like(prefix[:, :1]), prefix], dim=1)
'''},
        loses=("test_cell_path_gradient",),
    ),
    "the forget-gate bias from σ(b)·100 = 1/2 instead of σ(b)^100 = 1/2": WrongAnswer(
        cells={"forget_bias": '''
survival_at_bias_1 = (1.0 / (1.0 + math.exp(-1.0))) ** 100
p = 0.5 / 100
forget_bias_for_half = math.log(p / (1.0 - p))
'''},
        loses=("test_forget_bias",),
    ),
}
