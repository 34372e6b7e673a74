"""The tanh RNN against the LSTM on the adding problem, and how far back each one's gradient reaches (chapter 8).

- :class:`AddingRace`: the settings of one comparison (sequence length, sizes, optimizer, clipping, steps),
  with defaults that reproduce the book's T = 100 result; :data:`REDUCED_RACE`, the short run the chapter
  and its tests execute live.
- :func:`make_model`: the two contestants, built the same way from a seed: an
  :class:`~labkit.models.ElmanRNN` (tanh) and an :class:`~labkit.models.LSTM`, each with a scalar readout
  (or the same weights in ``torch.nn.RNN`` / ``torch.nn.LSTM``, which compute the same function faster).
- :func:`adding_problem_rnn_vs_lstm`: train both on the same batches for each seed; returns the histories.
- :func:`gradient_reach`: at initialization, on one batch, ‖∂L/∂h_t‖ of the Elman RNN and ‖∂L/∂h_t‖,
  ‖∂L/∂c_t‖ of the LSTM, by manual BPTT (:mod:`labkit.bptt`), plus the forget-gate product Π f along the
  cell path.

Why the race is fair: both models see the same batches (the same ``seed``), the same loss (the last step's
MSE), the same optimizer, learning rate and clipping threshold; only the cell differs. An LSTM has about
four times the parameters of an Elman RNN of the same width, so by default the RNN is twice as wide
(:attr:`AddingRace.rnn_hidden_size`), which makes the parameter counts about equal.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit._checks import one_of, positive_float, positive_int
from labkit.bptt import elman_bptt, lstm_forward, lstm_bptt
from labkit.models import LSTM, ElmanRNN
from labkit.tasks import SequenceTask, adding_problem
from labkit.train import TrainingHistory, train

MODELS = ("rnn", "lstm")
BACKENDS = ("labkit", "torch")


@dataclass(frozen=True)
class AddingRace:
    """The settings of one RNN-vs-LSTM comparison on the adding problem (uRNN variant).

    Attributes:
        seq_len: T, the sequence length.
        hidden_size: H, units of the LSTM (and of the RNN unless ``rnn_hidden_size`` is set).
        rnn_hidden_size: units of the Elman RNN; ``None`` uses ``hidden_size``. The default, 128, gives the
            RNN about as many parameters as the LSTM with H = 64 (17,025 against 17,473).
        steps: Adam updates per run.
        batch_size: sequences per update.
        lr: Adam's learning rate.
        clip_norm: the global gradient-norm threshold (both models are clipped the same way).
        forget_bias: the LSTM's initial forget-gate bias.
        eval_every: evaluate on a fixed held-out batch every this many steps (and at the end).
        eval_batch_size: sequences in that held-out batch.
        backend: ``"labkit"`` trains labkit's step-by-step models; ``"torch"`` trains ``torch.nn.RNN`` /
            ``torch.nn.LSTM`` holding exactly the same initial weights (:class:`TorchContestant`): the same
            function, computed by PyTorch's fused kernels, faster on a CPU. The long T = 100 experiment
            uses ``"torch"``.
    """

    seq_len: int = 100
    hidden_size: int = 64
    rnn_hidden_size: int | None = 128
    steps: int = 3000
    batch_size: int = 50
    lr: float = 1e-2
    clip_norm: float = 1.0
    forget_bias: float = 1.0
    eval_every: int = 100
    eval_batch_size: int = 1000
    backend: str = "torch"

    def __post_init__(self) -> None:
        positive_int(self.seq_len, "seq_len", minimum=2)
        positive_int(self.hidden_size, "hidden_size")
        if self.rnn_hidden_size is not None:
            positive_int(self.rnn_hidden_size, "rnn_hidden_size")
        positive_int(self.steps, "steps")
        positive_int(self.batch_size, "batch_size")
        positive_float(self.lr, "lr")
        positive_float(self.clip_norm, "clip_norm")
        if isinstance(self.forget_bias, bool) or not isinstance(self.forget_bias, (int, float)) \
                or not math.isfinite(self.forget_bias):
            raise TypeError(f"forget_bias must be a finite number, got {self.forget_bias!r}")
        positive_int(self.eval_every, "eval_every")
        positive_int(self.eval_batch_size, "eval_batch_size")
        one_of(self.backend, "backend", BACKENDS)

    @property
    def task(self) -> SequenceTask:
        """The adding problem of length ``seq_len`` (baseline MSE 1/6)."""
        return SequenceTask.adding(self.seq_len)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain numbers, for a JSON file."""
        return asdict(self)


#: The reduced race that chapter 8 runs live and ``tests/test_lstm_claims.py`` asserts on: T = 30, one seed,
#: 400 steps of the from-scratch models (well under a minute on one core).
REDUCED_RACE = AddingRace(seq_len=30, hidden_size=32, rnn_hidden_size=64, steps=400, batch_size=64,
                          eval_every=50, eval_batch_size=500, backend="labkit")


class TorchContestant(nn.Module):
    """A labkit model's weights in ``torch.nn.RNN`` / ``torch.nn.LSTM`` (batch first) plus its readout.

    ``forward(x)`` returns the readout at every step, (B, T, 1), exactly what the labkit model returns as
    ``outputs`` (see :meth:`labkit.models.LSTM.to_torch`).
    """

    def __init__(self, model: ElmanRNN | LSTM) -> None:
        super().__init__()
        self.recurrent, self.readout = model.to_torch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.recurrent(x)[0])  # (B, T, 1)


def make_model(kind: str, race: AddingRace, seed: int) -> ElmanRNN | LSTM | TorchContestant:
    """The ``"rnn"`` (tanh Elman, torch's default init) or ``"lstm"`` contestant, weights drawn from ``seed``.

    With ``race.backend == "torch"`` the same weights are wrapped in a :class:`TorchContestant`.
    """
    one_of(kind, "kind", MODELS)
    gen = torch.Generator().manual_seed(positive_int(seed, "seed", minimum=0))
    if kind == "rnn":
        model = ElmanRNN(2, race.rnn_hidden_size or race.hidden_size, 1, nonlinearity="tanh", generator=gen)
    else:
        model = LSTM(2, race.hidden_size, 1, forget_bias=race.forget_bias, generator=gen)
    return TorchContestant(model) if race.backend == "torch" else model


def train_one(kind: str, race: AddingRace, seed: int, callbacks: tuple[object, ...] | list[object] = ()
              ) -> TrainingHistory:
    """Train one contestant with Adam and global-norm clipping; batches and weights both come from ``seed``."""
    model = make_model(kind, race, seed)
    return train(model, race.task, steps=race.steps, batch_size=race.batch_size, lr=race.lr,
                 optimizer="adam", clip_norm=race.clip_norm, seed=seed, eval_every=race.eval_every,
                 eval_batch_size=race.eval_batch_size, progress=False, callbacks=callbacks)


def run_record(history: TrainingHistory, block: int = 10) -> dict[str, Any]:
    """A compact, JSON-ready record of one run: the held-out curve and the training curves in blocks.

    Returns:
        ``evals``: ``[step, held-out MSE]`` pairs; ``loss``, ``grad_norm`` and ``grad_norm_max``: the mean
        training loss, the median and the largest pre-clipping gradient norm over each block of ``block``
        steps; ``clipped_fraction``: the share of steps whose gradient was clipped; ``steps_completed``, ``diverged`` (``None`` or the reason) and
        ``wall_time_s``.
    """
    positive_int(block, "block")
    arrays = history.as_arrays()
    n = len(arrays["loss"]) // block * block
    loss = arrays["loss"][:n].reshape(-1, block).mean(axis=1)
    grads = arrays["grad_norm"][:n].reshape(-1, block)
    return {
        "evals": [[int(s), _rounded(v)] for s, v in history.evals],
        "block": block,
        "loss": [_rounded(v) for v in loss],
        "grad_norm": [_rounded(v) for v in np.median(grads, axis=1)],
        "grad_norm_max": [_rounded(v) for v in grads.max(axis=1)],
        "clipped_fraction": _rounded(float(arrays["clipped"].mean())) if len(arrays["clipped"]) else 0.0,
        "steps_completed": history.steps_completed,
        "diverged": None if history.diverged is None else str(history.diverged),
        "wall_time_s": round(history.wall_time_s, 1),
    }


def adding_problem_rnn_vs_lstm(seeds: list[int] | tuple[int, ...] = (0, 1, 2),
                               race: AddingRace | None = None, *,
                               models: tuple[str, ...] = MODELS, **overrides: Any) -> dict[str, Any]:
    """Train the tanh RNN and the LSTM on the adding problem for every seed, one after the other.

    Args:
        seeds: one run per model per seed; a seed fixes the initial weights and the training batches.
        race: the settings; ``None`` uses :class:`AddingRace`'s defaults.
        models: which contestants to train, a subset of ``("rnn", "lstm")``.
        **overrides: fields of ``race`` to change, e.g. ``seq_len=40, steps=500``.

    Returns:
        ``{"settings": race.to_dict(), "baseline": 1/6, "runs": {model: {str(seed): run_record(history)}}}``,
        ready for ``json.dump``. (``experiments/adding_rnn_vs_lstm.py`` runs the same, one process per run.)
    """
    race = replace(race or AddingRace(), **overrides)
    seeds = _check_seeds(seeds)
    for kind in models:
        one_of(kind, "models", MODELS)
    runs = {kind: {str(seed): run_record(train_one(kind, race, seed)) for seed in seeds} for kind in models}
    return {"settings": race.to_dict(), "baseline": race.task.baseline, "runs": runs}


def final_eval_losses(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model: {seed: held-out MSE after the last step}}`` from :func:`adding_problem_rnn_vs_lstm`'s result."""
    return {kind: {seed: run["evals"][-1][1] for seed, run in runs.items()}
            for kind, runs in result["runs"].items()}


def eval_curves(result: dict[str, Any], kind: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The evaluation steps and, per seed, the held-out MSE at those steps, for one model."""
    runs = result["runs"][kind]
    steps = np.array([s for s, _ in next(iter(runs.values()))["evals"]], dtype=float)
    return steps, {seed: np.array([v for _, v in run["evals"]], dtype=float) for seed, run in runs.items()}


def _rounded(value: float) -> float:
    """Six significant digits: plenty for a plot, and a JSON file a person can read."""
    return float(f"{value:.6g}")


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, (int, str)) or not isinstance(seeds, (list, tuple)) or not seeds:
        raise TypeError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    return [positive_int(seed, "seed", minimum=0) for seed in seeds]


@dataclass(frozen=True)
class GradientReach:
    """How much of the last step's loss gradient reaches each earlier step, at initialization.

    Attributes:
        rnn_hidden: ‖∂L/∂h_t‖ of the Elman RNN, t = 1..T.
        lstm_hidden: ‖∂L/∂h_t‖ of the LSTM.
        lstm_cell: ‖∂L/∂c_t‖ of the LSTM.
        forget_product: mean over batch and units of Π_{s=t+1..T} f_s, the direct cell-path factor
            ∂c_T/∂c_t|_direct, t = 1..T (the last entry is the empty product 1).
    """

    rnn_hidden: np.ndarray
    lstm_hidden: np.ndarray
    lstm_cell: np.ndarray
    forget_product: np.ndarray


def gradient_reach(seq_len: int = 100, hidden_size: int = 64, *, forget_bias: float = 1.0,
                   batch_size: int = 32, seed: int = 0) -> GradientReach:
    """Manual BPTT of the adding-problem loss through an untrained tanh RNN and LSTM on the same batch.

    Both models have ``hidden_size`` units, are built by :func:`make_model` with this seed and run in float64 (so that a vanishing
    gradient is measured, not underflowed). The loss is the last step's MSE, so every ‖∂L/∂h_t‖ for t < T
    is gradient that travelled back through the recurrence.
    """
    race = AddingRace(seq_len=seq_len, hidden_size=hidden_size, rnn_hidden_size=hidden_size,
                      forget_bias=float(forget_bias), backend="labkit")
    x, y = adding_problem(positive_int(batch_size, "batch_size"), seq_len,
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loss_fn = race.task.loss
    rnn = make_model("rnn", race, seed).double()
    lstm = make_model("lstm", race, seed).double()
    _, rnn_result = elman_bptt(rnn, x, y, loss_fn)
    _, lstm_result = lstm_bptt(lstm, x, y, loss_fn)
    H = hidden_size
    forget = lstm_forward(lstm, x).gates[:, :, H:2 * H]  # f_1..f_T, (B, T, H)
    # Π_{s=t+1..T} f_s: a reversed cumulative product, shifted so that t = T gets the empty product
    suffix = torch.flip(torch.cumprod(torch.flip(forget, [1]), dim=1), [1])  # Π_{s=t..T} f_s
    product = torch.cat([suffix[:, 1:], torch.ones_like(suffix[:, :1])], dim=1)  # (B, T, H)
    return GradientReach(rnn_result.hidden_grad_norms.numpy(), lstm_result.hidden_grad_norms.numpy(),
                         lstm_result.cell_grad_norms.numpy(), product.mean(dim=(0, 2)).numpy())
