"""Claims from the literature that the course relies on, each reproduced by a small computation.

Every function here reruns one claim with this course's code and returns a :class:`Reproduction`: the
claim, its source (a key of ``book/references.bib``), what the source reports, what was measured here, and
whether the measurement agrees. The verdict is computed, never typed: each function states its criterion
in its docstring, and :func:`reproduce_all` gathers them into the table of appendix A.

The settings are small enough for the whole table to be computed in well under a minute on two CPU cores.
The long runs (the LSTM and the tanh RNN on the adding problem with T = 100) are too slow for that: chapter
8 runs them once and stores the result, and :func:`lstm_solves_adding_problem` reads it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from labkit import cliff, deepnets
from labkit._checks import positive_float, positive_int
from labkit.bptt import jacobian_product_norms
from labkit.clip_study import ExplodingRNN, final_held_out_loss
from labkit.models import ElmanRNN, largest_singular_value
from labkit.quadratic import Quadratic, gradient_descent, growth_rate
from labkit.rnn_vs_lstm import final_eval_losses
from labkit.tasks import adding_baseline, adding_problem


@dataclass(frozen=True)
class Reproduction:
    """One literature claim next to this course's measurement of it."""

    topic: str  # a few words, e.g. "the loss cliff"
    claim: str  # what the literature says, in one sentence
    source: str  # the BibTeX key of the source in book/references.bib
    literature: str  # the value or condition the source gives
    measured: str  # what this course measured, formatted
    reproduced: bool  # whether the measurement agrees with the claim, by the criterion of its function
    settings: str  # what was run to measure it
    chapter: str  # where the book shows it, e.g. "ch. 4"

    @property
    def verdict(self) -> str:
        return "reproduced" if self.reproduced else "NOT reproduced"

    def as_dict(self) -> dict[str, str | bool]:
        return {**asdict(self), "verdict": self.verdict}


def gd_stability_limit(eigenvalues: Iterable[float] = (1.0, 10.0), margin: float = 0.05,
                       steps: int = 200) -> Reproduction:
    """Gradient descent on a quadratic converges if and only if η < 2/λ_max.

    Runs gradient descent at ``(1 ∓ margin)·2/λ_max`` from θ_0 = (1, …, 1) and measures the per-step
    factor r of the error ‖θ_k − θ*‖ (:func:`labkit.quadratic.growth_rate`). Reproduced when r < 1 below
    the limit, r > 1 above it, and both match the predicted factor |1 − ηλ_max| to 1e-6.
    """
    quadratic = Quadratic.from_eigenvalues(list(eigenvalues))
    positive_float(margin, "margin")
    limit = quadratic.critical_lr
    rates, predicted = [], []
    for lr in (limit * (1 - margin), limit * (1 + margin)):
        run = gradient_descent(quadratic, torch.ones(quadratic.dim, dtype=torch.float64), lr,
                               positive_int(steps, "steps"))
        errors = torch.linalg.vector_norm(run.iterates - quadratic.minimizer, dim=1)
        rates.append(growth_rate(errors))
        predicted.append(quadratic.contraction(lr))
    agree = all(abs(r - p) < 1e-6 for r, p in zip(rates, predicted))
    lam = ", ".join(f"{v:g}" for v in quadratic.eigenvalues.tolist())
    return Reproduction(
        topic="stability limit of gradient descent",
        claim="On a quadratic, gradient descent converges for η < 2/λ_max and diverges for η > 2/λ_max, "
              "the error scaling by |1 − ηλ_max| per step.",
        source="nocedal2006numerical",
        literature=f"per-step factor |1 − ηλ_max| = {predicted[0]:.4f} below, {predicted[1]:.4f} above",
        measured=f"factor {rates[0]:.4f} at η = {1 - margin:g}·2/λ_max, {rates[1]:.4f} at {1 + margin:g}·2/λ_max",
        reproduced=rates[0] < 1 < rates[1] and agree,
        settings=f"eigenvalues ({lam}), {steps} steps, float64",
        chapter="ch. 1",
    )


def linear_rnn_growth(spectral_radii: Iterable[float] = (0.9, 1.1), hidden_size: int = 64, steps: int = 300,
                      seed: int = 0) -> Reproduction:
    """In a linear RNN, ∂h_T/∂h_0 = W^T grows or shrinks like ρ(W)^T.

    Draws a Gaussian W (H×H), rescales it to each spectral radius ρ, and measures the per-step factor of
    ‖W^n‖₂ over the last half of n = 1..``steps``. Reproduced when every measured factor is within 1% of ρ.
    """
    positive_int(hidden_size, "hidden_size")
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(hidden_size, hidden_size, generator=gen, dtype=torch.float64)
    base = base / torch.linalg.eigvals(base).abs().max()
    measured = []
    radii = [positive_float(rho, "spectral radius") for rho in spectral_radii]
    for rho in radii:
        power, norms = torch.eye(hidden_size, dtype=torch.float64), []
        for _ in range(positive_int(steps, "steps")):
            power = (rho * base) @ power
            norms.append(torch.linalg.matrix_norm(power, ord=2).item())
        measured.append(growth_rate(norms))
    worst = max(abs(m / rho - 1) for m, rho in zip(measured, radii))
    return Reproduction(
        topic="ρ^T growth in the linear RNN",
        claim="Without a nonlinearity the Jacobian product is W^T, whose norm grows or shrinks like ρ(W)^T.",
        source="pascanu2013difficulty",
        literature="per-step factor ρ(W): " + ", ".join(f"{rho:g}" for rho in radii),
        measured="per-step factor " + ", ".join(f"{m:.4f}" for m in measured) + f" (worst {worst:.2%} off)",
        reproduced=worst < 0.01,
        settings=f"Gaussian W, H = {hidden_size}, n = 1..{steps}, seed {seed}",
        chapter="ch. 4",
    )


def vanishing_condition(largest_singular: float = 0.9, hidden_size: int = 32, steps: int = 60,
                        seeds: Iterable[int] = range(3)) -> Reproduction:
    """For tanh (γ = 1), λ₁(W) < 1/γ is sufficient for the gradient to vanish: ‖∂h_T/∂h_k‖ ≤ λ₁^(T−k).

    Rescales the recurrent matrix of a tanh ElmanRNN to the given λ₁, feeds it N(0, 1) inputs, and
    measures ‖∂h_T/∂h_k‖ for every k (:func:`labkit.bptt.jacobian_product_norms`). Reproduced when no norm
    exceeds the bound (up to 1e-9, relative) on any seed.
    """
    lam = positive_float(largest_singular, "largest_singular")
    T = positive_int(steps, "steps", minimum=2)
    worst_ratio, longest = 0.0, 0.0
    seeds = list(seeds)
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        model = ElmanRNN(4, positive_int(hidden_size, "hidden_size"), generator=gen).double()
        with torch.no_grad():
            model.weight_hh.mul_(lam / largest_singular_value(model.weight_hh))
        x = torch.randn(1, T, 4, generator=gen, dtype=torch.float64)
        norms = jacobian_product_norms(model, x)[0]  # ‖∂h_T/∂h_k‖ for k = 1..T
        bound = lam ** torch.arange(T - 1, -1, -1, dtype=torch.float64)  # λ₁^(T−k)
        worst_ratio = max(worst_ratio, (norms / bound).max().item())
        longest = max(longest, norms[0].item())
    return Reproduction(
        topic="the vanishing condition λ₁ < 1/γ",
        claim="If the largest singular value of W_rec is below 1/γ (γ bounds |σ'|), the long-term "
              "gradient components vanish exponentially.",
        source="pascanu2013difficulty",
        literature=f"‖∂h_T/∂h_k‖ ≤ λ₁^(T−k); λ₁^(T−1) = {lam ** (T - 1):.1e}",
        measured=f"largest ‖∂h_T/∂h_k‖ / λ₁^(T−k) = {worst_ratio:.3f}; ‖∂h_T/∂h_1‖ ≤ {longest:.1e}",
        reproduced=worst_ratio <= 1 + 1e-9,
        settings=f"tanh RNN, H = {hidden_size}, λ₁ = {lam:g}, T = {T}, {len(seeds)} seeds",
        chapter="ch. 4",
    )


def loss_cliff(resolution: int = 121, wall_points: int = 7) -> Reproduction:
    """The one-unit RNN of Pascanu et al. (§3) has a wall in its loss where the gradient is huge, and
    clipping the gradient's norm keeps every step at most η·τ long.

    Measures the gradient norm over the (w, b) grid of :mod:`labkit.cliff` and exactly on its wall
    (:func:`labkit.cliff.cliff_wall`, for ``wall_points`` values of w from 5 to 8), and runs its
    demonstration with and without clipping. Reproduced when the median gradient norm on the wall is at
    least 10⁶ times the grid's median, the clipped run never steps farther than η·τ, and the plain run makes
    a step at least ten times longer.
    """
    w, b = cliff.default_grid(positive_int(resolution, "resolution", minimum=3))
    _, grid_norms = cliff.cliff_loss_surface(w, b)
    wall_w = np.linspace(5.0, 8.0, positive_int(wall_points, "wall_points"))
    wall_norms = [cliff.cliff_loss_surface([w_i], [b_i])[1].item() for w_i, b_i in zip(wall_w, cliff.cliff_wall(wall_w))]
    ratio = float(np.median(wall_norms) / np.median(grid_norms[np.isfinite(grid_norms)]))
    (w0, b0), lr, tau = cliff.DEMO_START, cliff.DEMO_LR, cliff.DEMO_CLIP
    plain = cliff.gradient_descent_trajectory(w0, b0, lr, cliff.DEMO_STEPS)
    clipped = cliff.gradient_descent_trajectory(w0, b0, lr, cliff.DEMO_STEPS, clip_norm=tau)
    plain_step = float(np.max(plain.step_lengths)) if len(plain.step_lengths) else math.inf
    clipped_step = float(np.max(clipped.step_lengths))
    return Reproduction(
        topic="the loss cliff",
        claim="Recurrent models have walls in the loss where the gradient explodes; a plain step there is "
              "thrown far away, a step with the gradient's norm clipped to τ moves at most η·τ.",
        source="pascanu2013difficulty",
        literature="a wall of very large gradient (§3, Fig. 6); clipped steps ≤ η·τ (Algorithm 1)",
        measured=f"‖∇L‖ on the wall / median ‖∇L‖ = {ratio:.1e}; longest step {plain_step:.3g} plain, "
                 f"{clipped_step:.3g} clipped (η·τ = {lr * tau:g})",
        reproduced=ratio >= 1e6 and clipped_step <= lr * tau * (1 + 1e-9) and plain_step >= 10 * lr * tau,
        settings=f"T = {cliff.STEPS}, {resolution}×{resolution} grid, {wall_points} points on the wall, "
                 f"start {cliff.DEMO_START}, η = {lr:g}, τ = {tau:g}, {cliff.DEMO_STEPS} steps",
        chapter="ch. 4, 6",
    )


def adding_problem_baseline(seq_len: int = 100, samples: int = 200_000, seed: int = 0) -> Reproduction:
    """Predicting the mean target 1 on the adding problem (uRNN variant) gives MSE 1/6.

    Draws ``samples`` sequences and measures the MSE of the constant prediction 1. Reproduced when it is
    within three standard errors of 1/6.
    """
    x, y = adding_problem(positive_int(samples, "samples", minimum=2), positive_int(seq_len, "seq_len"),
                          generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    squared_errors = (y - 1.0).square()
    mse = squared_errors.mean().item()
    standard_error = squared_errors.std().item() / math.sqrt(samples)
    baseline = adding_baseline("urnn")
    return Reproduction(
        topic="the adding-problem baseline",
        claim="A model that ignores the inputs and predicts the mean sum 1 scores MSE Var(U₁ + U₂) = 1/6.",
        source="arjovsky2016unitary",
        literature=f"MSE {baseline:.4f}",
        measured=f"MSE {mse:.4f} ± {standard_error:.4f}",
        reproduced=abs(mse - baseline) <= 3 * standard_error,
        settings=f"T = {seq_len}, {samples:,} sequences, seed {seed}",
        chapter="ch. 3, 8",
    )


def _per_layer_factor(activation: str, init: str, depth: int, width: int, seeds: list[int]) -> tuple[float, float]:
    """The geometric-mean factor by which ‖δ_l‖ changes per backward step (measured, mean-field)."""
    profile = deepnets.measure_depth_profile(activation, init, depth, loss="random", width=width, seeds=seeds)
    ratio = float(np.exp(np.log(profile.first_to_last()[0]).mean()))
    predicted = float(deepnets.mean_field_profile(activation, init, depth, width=width).signal_ratio[0])
    return ratio ** (1 / (depth - 1)), predicted ** (1 / (depth - 1))


def glorot_depth_ratios(depth: int = 10, width: int = 256, seeds: Iterable[int] = range(3)) -> Reproduction:
    """With tanh, the standard init U(±1/√n) shrinks the back-propagated gradient layer after layer; the
    normalized (Glorot) init keeps it far more uniform.

    Measures the per-layer factor of ‖δ_l‖ at initialization (geometric mean over seeds). Reproduced when
    the standard init's factor is below 0.7 (the linear-regime value is √(1/3) ≈ 0.58), Glorot's is above
    0.8, and each is within 5% of the mean-field prediction of :func:`labkit.deepnets.mean_field_profile`.
    """
    L = positive_int(depth, "depth", minimum=2)
    seeds = list(seeds)
    standard, standard_mf = _per_layer_factor("tanh", "standard", L, width, seeds)
    glorot, glorot_mf = _per_layer_factor("tanh", "glorot", L, width, seeds)
    close = all(abs(m / p - 1) < 0.05 for m, p in ((standard, standard_mf), (glorot, glorot_mf)))
    return Reproduction(
        topic="gradient ratios across depth: Glorot",
        claim="In a tanh network with the standard init the back-propagated gradient shrinks toward the "
              "input; the normalized init keeps its size far more uniform across layers.",
        source="glorot2010understanding",
        literature="per-layer factor √(1/3) ≈ 0.58 (standard, linear regime) vs ≈ 1 (normalized)",
        measured=f"per-layer factor {standard:.3f} standard, {glorot:.3f} Glorot "
                 f"(mean field {standard_mf:.3f}, {glorot_mf:.3f})",
        reproduced=standard < 0.7 and glorot > 0.8 and close,
        settings=f"tanh MLP, depth {L}, width {width}, {len(seeds)} seeds, at initialization",
        chapter="ch. 2",
    )


def he_depth_ratios(depth: int = 10, width: int = 256, seeds: Iterable[int] = range(3)) -> Reproduction:
    """With ReLU, He's init (variance 2/n) keeps the back-propagated gradient's size across depth; Glorot's
    halves its square at every layer.

    Reproduced when He's per-layer factor is within 5% of 1 and Glorot's within 5% of 1/√2.
    """
    L = positive_int(depth, "depth", minimum=2)
    seeds = list(seeds)
    he, _ = _per_layer_factor("relu", "he", L, width, seeds)
    glorot, _ = _per_layer_factor("relu", "glorot", L, width, seeds)
    return Reproduction(
        topic="gradient ratios across depth: He",
        claim="For ReLU networks, weights of variance 2/n keep the gradient's size across layers; "
              "variance 1/n shrinks it by 1/√2 per layer.",
        source="he2015delving",
        literature="per-layer factor 1 (He) vs 1/√2 ≈ 0.707 (variance 1/n)",
        measured=f"per-layer factor {he:.3f} He, {glorot:.3f} Glorot",
        reproduced=abs(he - 1) < 0.05 and abs(glorot / math.sqrt(0.5) - 1) < 0.05,
        settings=f"ReLU MLP, depth {L}, width {width}, {len(seeds)} seeds, at initialization",
        chapter="ch. 2",
    )


def clipping_trains_where_sgd_diverges(setup: ExplodingRNN | None = None, seeds: Iterable[int] = range(3),
                                       steps: int | None = None) -> Reproduction:
    """At a learning rate where plain SGD on a tanh RNN diverges, the same SGD with the gradient's norm
    clipped trains (the experiment of chapter 6, :class:`labkit.clip_study.ExplodingRNN`).

    Reproduced when, on every seed, the unclipped run goes non-finite and the clipped run ends with a
    held-out MSE below half the memoryless baseline.
    """
    setup = setup if setup is not None else ExplodingRNN()
    seeds = list(seeds)
    diverged_at, clipped = [], []
    for seed in seeds:
        plain = setup.run(seed, None, steps=steps)
        diverged_at.append(plain.diverged.step if plain.diverged is not None else None)
        clipped.append(final_held_out_loss(setup.run(seed, setup.clip_norm, steps=steps)))
    baseline = setup.task().baseline
    blew_up = ", ".join("never" if step is None else str(step) for step in diverged_at)
    return Reproduction(
        topic="clipping vs divergence",
        claim="Clipping the gradient's norm lets SGD train a recurrent network at a learning rate where "
              "the unclipped run diverges.",
        source="pascanu2013difficulty",
        literature="unclipped diverges; clipped converges (§4, §5)",
        measured=f"unclipped non-finite at step {blew_up}; clipped held-out MSE "
                 + ", ".join(f"{loss:.4f}" for loss in clipped) + f" (baseline {baseline:.4f})",
        reproduced=all(step is not None for step in diverged_at)
        and all(loss < baseline / 2 for loss in clipped),  # NaN (a clipped run that diverged) fails too
        settings=f"adding problem T = {setup.seq_len}, tanh RNN H = {setup.hidden_size}, W_hh = {setup.gain:g} × "
                 f"orthogonal, SGD η = {setup.lr:g}, τ = {setup.clip_norm:g}, "
                 f"{setup.steps if steps is None else steps} steps, {len(seeds)} seeds",
        chapter="ch. 6",
    )


def lstm_solves_adding_problem(result: dict[str, Any], lstm_below: float = 0.02,
                               rnn_above: float = 0.8) -> Reproduction:
    """On the adding problem the tanh RNN stays at the baseline MSE while the LSTM goes far below it.

    ``result`` is what :func:`labkit.rnn_vs_lstm.adding_problem_rnn_vs_lstm` returns (chapter 8 stores
    its T = 100 run in ``book/data/adding_rnn_vs_lstm.json``). Reproduced when on every seed the LSTM's
    final held-out MSE is below ``lstm_below`` and the RNN's is above ``rnn_above`` × the baseline.
    """
    finals = final_eval_losses(result)
    baseline = float(result["baseline"])
    settings = result["settings"]
    rnn, lstm = list(finals["rnn"].values()), list(finals["lstm"].values())
    diverged = [f"{kind} seed {seed}" for kind, runs in result["runs"].items() for seed, run in runs.items()
                if run["diverged"] is not None]
    return Reproduction(
        topic="LSTM vs tanh RNN on the adding problem",
        claim="A tanh RNN cannot learn the adding problem over long sequences and stays at the baseline MSE; "
              "an LSTM learns it.",
        source="hochreiter1997long",
        literature=f"RNN at the baseline {baseline:.4f}; LSTM far below (e.g. < {lstm_below:g})",
        measured="final held-out MSE: RNN " + ", ".join(f"{v:.4f}" for v in rnn)
                 + "; LSTM " + ", ".join(f"{v:.4f}" for v in lstm)
                 + (f"; diverged: {', '.join(diverged)}" if diverged else ""),
        reproduced=bool(rnn and lstm) and not diverged and all(v > rnn_above * baseline for v in rnn)
        and all(v < lstm_below for v in lstm),
        settings=f"adding problem T = {settings['seq_len']}, LSTM H = {settings['hidden_size']}, RNN H = "
                 f"{settings['rnn_hidden_size']}, Adam η = {settings['lr']:g}, {settings['steps']} steps, "
                 f"{len(lstm)} seeds",
        chapter="ch. 8",
    )


CLAIMS: tuple[Callable[[], Reproduction], ...] = (
    gd_stability_limit, glorot_depth_ratios, he_depth_ratios, adding_problem_baseline, linear_rnn_growth,
    vanishing_condition, loss_cliff, clipping_trains_where_sgd_diverges,
)


def reproduce_all(adding_race: dict[str, Any] | None = None,
                  claims: Iterable[Callable[[], Reproduction]] = CLAIMS) -> list[Reproduction]:
    """Run every claim's reproduction with its default settings, in the book's order; with ``adding_race``
    (a stored :func:`labkit.rnn_vs_lstm.adding_problem_rnn_vs_lstm` result), the LSTM claim too."""
    table = [claim() for claim in claims]
    if adding_race is not None:
        table.append(lstm_solves_adding_problem(adding_race))
    return table
