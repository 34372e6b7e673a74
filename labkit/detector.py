"""Read the signals of a training run and say what is wrong: exploding, vanishing or healthy.

:class:`ExplosionDetector` turns a run's records (a :class:`labkit.monitor.GradientMonitor`'s history, a
training history or plain arrays, gathered in a :class:`Trace`) into a :class:`Diagnosis` with the
evidence, the first step it was seen and the remedies.

Why every rule here is *relative*: the size of a gradient depends on the scale of the loss, the batch
size, the number of parameters and the architecture. A healthy model can have ‖g‖ = 50 at every step and
a broken one ‖g‖ = 0.5, so "the gradient is above 1" means nothing. What does mean something is a norm
far above its own recent past, a NaN or inf, weights that keep multiplying, or a gradient that shrinks
(or grows) geometrically as it travels back in time. No rule compares a norm with an absolute number.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labkit._checks import positive_float, positive_int

PROFILE_FLOOR = 1e-45  # a 0 in a float32 profile is an underflow below ~1e-45; read it as that bound

@dataclass
class Trace:
    """The signals :class:`ExplosionDetector` reads; only ``grad_norm`` is required.

    Attributes:
        grad_norm: the global gradient norm per step, (N,); NaN or inf means non-finite.
        loss: the loss per step, (N,).
        weight_norm: the global weight norm per step, (N,).
        update_ratio: the global update-to-weight ratio ‖Δθ‖/‖θ‖ per step, (N,); NaN where unmeasured.
        hidden_grad_norms: ‖∂L/∂h_t‖ for t = 1..T, one profile (T,) or one per recorded step (M, T).
        steps: the step numbers of ``grad_norm``, (N,); 0..N-1 when omitted.
        timestep_steps: the steps of the rows of ``hidden_grad_norms``; 0..M-1 when omitted.
        spectral_radius, largest_singular_value: ρ and λ₁ of the recurrent weight over training (used in
            the remedies only).
        diverged: the training loop's divergence record (``step``, ``reason``), if the run stopped.
    """

    grad_norm: np.ndarray
    loss: np.ndarray | None = None
    weight_norm: np.ndarray | None = None
    update_ratio: np.ndarray | None = None
    hidden_grad_norms: np.ndarray | None = None
    steps: np.ndarray | None = None
    timestep_steps: np.ndarray | None = None
    spectral_radius: np.ndarray | None = None
    largest_singular_value: np.ndarray | None = None
    diverged: Any = None

    def __post_init__(self) -> None:
        self.grad_norm = _series(self.grad_norm, "grad_norm")
        n = len(self.grad_norm)
        self.steps = np.arange(n) if self.steps is None else _series(self.steps, "steps", n).astype(np.int64)
        self.loss = None if self.loss is None else _series(self.loss, "loss", n, non_negative=False)
        self.weight_norm = None if self.weight_norm is None else _series(self.weight_norm, "weight_norm", n)
        self.update_ratio = None if self.update_ratio is None else _series(self.update_ratio, "update_ratio", n)
        if self.hidden_grad_norms is not None:
            profile = np.array(self.hidden_grad_norms, dtype=float)
            if profile.ndim == 1:
                profile = profile[None, :]
                if self.timestep_steps is None:
                    self.timestep_steps = self.steps[-1:] if n else np.zeros(1, dtype=np.int64)
            if profile.ndim != 2 or profile.shape[1] < 2:
                raise ValueError(f"hidden_grad_norms must have shape (T,) or (steps, T) with T >= 2, "
                                 f"got {profile.shape}")
            self.hidden_grad_norms = profile
            m = len(profile)
            self.timestep_steps = (np.arange(m) if self.timestep_steps is None
                                   else _series(self.timestep_steps, "timestep_steps", m).astype(np.int64))
        if self.spectral_radius is not None:
            self.spectral_radius = np.array(self.spectral_radius, dtype=float)
        if self.largest_singular_value is not None:
            self.largest_singular_value = np.array(self.largest_singular_value, dtype=float).reshape(-1)

    @classmethod
    def of(cls, source: Any) -> Trace:
        """Read a trace from a :class:`MonitorHistory`, a :class:`GradientMonitor`, a training history, or
        any mapping/object with ``grad_norm`` (or ``global_grad_norm``) and optionally ``loss``,
        ``weight_norm``, ``update_ratio`` (or their ``global_`` forms), ``hidden_grad_norms``, ``steps``,
        ``diverged``."""
        if isinstance(source, Trace):
            return source
        if hasattr(type(source), "history"):  # a GradientMonitor: read what it recorded
            source = source.history

        def read(*names: str) -> Any:
            for name in names:
                value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
                if value is not None and not isinstance(value, Mapping):  # MonitorHistory.weight_norm is a dict
                    return value
            return None

        grad_norm = read("global_grad_norm", "grad_norm")
        if grad_norm is None:
            raise TypeError(f"cannot read a gradient-norm series from a {type(source).__name__}: expected a "
                            f"GradientMonitor, its history, a TrainingHistory or arrays with 'grad_norm'")
        return cls(grad_norm=grad_norm, loss=read("loss"), weight_norm=read("global_weight_norm", "weight_norm"),
                   update_ratio=read("global_update_ratio", "update_ratio"),
                   hidden_grad_norms=read("hidden_grad_norms"), steps=read("steps"),
                   timestep_steps=read("timestep_steps"), spectral_radius=read("spectral_radius"),
                   largest_singular_value=read("largest_singular_value"), diverged=read("diverged"))


def _series(values: Any, name: str, length: int | None = None, non_negative: bool = True) -> np.ndarray:
    """``values`` as a 1-D float array, checked: one value per step, no negative norms."""
    if np.ndim(values) > 1:
        raise ValueError(f"{name} must be one value per step (a 1-D array), got shape {np.shape(values)}")
    array = np.array(values, dtype=float).reshape(-1)
    if length is not None and len(array) != length:
        raise ValueError(f"{name} must have one value per step ({length}), got {len(array)}")
    if non_negative and np.any(array < 0):
        raise ValueError(f"{name} must not be negative, got {array[array < 0][0]}")
    return array


@dataclass
class Finding:
    """One observation of the detector.

    Attributes:
        rule: the rule that made it (``"non-finite"``, ``"norm-runaway"``, ``"norm-spike"``,
            ``"weight-runaway"``, ``"update-runaway"``, ``"profile-vanishing"``, ``"profile-exploding"``).
        step: the first step at which it was seen.
        message: the finding in words, with the measured numbers.
        points_to: the verdict it supports, ``"exploding"`` or ``"vanishing"``; ``None`` for a note.
        values: the measured numbers by name.
    """

    rule: str
    step: int
    message: str
    points_to: str | None
    values: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        tag = self.points_to or "note"
        return f"[{self.rule}] step {self.step} ({tag}): {self.message}"


@dataclass
class Diagnosis:
    """The detector's reading of a trace.

    Attributes:
        verdict: ``"exploding"``, ``"vanishing"`` or ``"healthy"``.
        evidence: every finding, the ones behind the verdict first, then the notes.
        first_step: the earliest step of the findings behind the verdict; ``None`` when healthy.
        remedies: suggested fixes, most direct first.
        suggested_clip_norm: a global-norm clipping threshold, the median norm before the trouble.
    """

    verdict: str
    evidence: list[Finding]
    first_step: int | None
    remedies: list[str]
    suggested_clip_norm: float | None = None

    def __str__(self) -> str:
        since = "" if self.first_step is None else f" (from step {self.first_step})"
        lines = [f"Diagnosis: {self.verdict}{since}"]
        lines += (["Evidence:"] + [f"  - {f}" for f in self.evidence]) if self.evidence else ["Evidence: none"]
        if self.remedies:
            lines += ["Remedies:"] + [f"  {i}. {r}" for i, r in enumerate(self.remedies, 1)]
        return "\n".join(lines)


@dataclass(frozen=True)
class ExplosionDetector:
    """Rules that turn gradient signals into a diagnosis. No rule looks at the absolute size of a norm.

    1. **non-finite** (exploding): a NaN/inf loss, gradient norm or weight norm, or a run the training
       loop stopped as diverged.
    2. **norm growth** against the running median m_t = median(‖g‖ over the ``window`` steps before t)
       (at least ``min_window`` finite ones). A step is *high* when ‖g_t‖ > ``spike_factor`` · m_t or
       ‖g_t‖ is not finite. ``sustained_steps`` or more high steps in a row, or a high stretch that ends
       in a non-finite value, is a **norm-runaway** (exploding). A shorter stretch is a **norm-spike**:
       reported as a note, not a diagnosis, because healthy runs have them too: a batch that meets a
       steep wall (the cliff of Pascanu et al. 2013), or an LSTM at the moment it starts to solve its
       task, can throw the norm up 10-20× for a step or two and then train on. But a spike at most
       ``sustained_steps`` steps before another exploding finding is where that explosion began (one
       huge step throws the weights off and the runaway follows), and it is counted as such.
    3. **weight-runaway** (exploding): ‖θ_t‖ > ``weight_growth_factor`` · ‖θ_{t−window}‖ (or ‖θ_0‖ in the
       first window), and the last weight norm of the trace is still its largest: the weights multiply
       and keep going. (A model started from near-zero weights can grow this fast while healthy.)
    4. **update-runaway** (exploding): the update-to-weight ratio ‖Δθ‖/‖θ‖ above ``max_update_ratio``
       for ``sustained_steps`` steps in a row: step after step, the update is as large as the weights.
       (The ratio is scale-free; a healthy run sits near 1e-3.)
    5. **profile** of ‖∂L/∂h_t‖, t = 1..T: fit log₁₀‖∂L/∂h_t‖ = a + b·t by least squares; the fitted
       span s = b·(T − 1) is how many decades the gradient gains from t = 1 to t = T. If the median s
       over the recorded profiles exceeds log₁₀ ``profile_factor`` the gradient reaching the early steps
       is that many times smaller than at the end: **profile-vanishing**. If it falls below
       −log₁₀ ``profile_factor`` it grows toward the early steps: **profile-exploding**. The profile is
       most telling when the loss sits at the end of the sequence (the adding problem).

    The verdict is exploding if any rule points to it (a run can do both, and explosion is the one that
    destroys it), else vanishing, else healthy.

    Attributes:
        window: steps in the running median and in the weight-growth comparison.
        min_window: finite earlier norms needed before a step can be judged against the median.
        spike_factor: how many times its running median a norm must be to count as high.
        sustained_steps: consecutive high steps that make a runaway.
        weight_growth_factor: growth of ‖θ‖ within one window that counts as runaway.
        max_update_ratio: the update-to-weight ratio above which a step rewrites the weights.
        profile_factor: end-to-start ratio of the fitted profile that counts as vanishing (or, reversed,
            as exploding).
    """

    window: int = 20
    min_window: int = 3
    spike_factor: float = 10.0
    sustained_steps: int = 5
    weight_growth_factor: float = 10.0
    max_update_ratio: float = 1.0
    profile_factor: float = 1e4

    def __post_init__(self) -> None:
        positive_int(self.window, "window")
        positive_int(self.min_window, "min_window")
        if self.min_window > self.window:
            raise ValueError(f"min_window must be <= window, got {self.min_window} > {self.window}")
        positive_int(self.sustained_steps, "sustained_steps")
        for name in ("spike_factor", "weight_growth_factor", "profile_factor"):
            if positive_float(getattr(self, name), name) <= 1:
                raise ValueError(f"{name} must be > 1 (a growth factor), got {getattr(self, name)}")
        positive_float(self.max_update_ratio, "max_update_ratio")

    def diagnose(self, trace: Any = None, **arrays: Any) -> Diagnosis:
        """Diagnose a run.

        Args:
            trace: a :class:`GradientMonitor`, its :class:`MonitorHistory`, a training history, a
                :class:`Trace` or a mapping of arrays; or pass the arrays as keywords instead
                (``diagnose(grad_norm=..., loss=..., weight_norm=..., hidden_grad_norms=...)``).

        Returns:
            The :class:`Diagnosis`: verdict, evidence, first step and remedies.
        """
        if (trace is None) == (not arrays):
            raise TypeError("pass either a trace or the arrays as keywords (grad_norm=..., ...), not both")
        trace = Trace(**arrays) if trace is None else Trace.of(trace)
        findings = (self._nonfinite(trace) + self._norm_growth(trace)
                    + self._weight_runaway(trace) + self._update_runaway(trace) + self._profile(trace))
        verdict = next((v for v in ("exploding", "vanishing") if any(f.points_to == v for f in findings)),
                       "healthy")
        if verdict == "exploding":
            self._join_spikes_to_the_explosion(findings)
        decisive = sorted((f for f in findings if f.points_to == verdict), key=lambda f: f.step)
        notes = sorted((f for f in findings if f.points_to != verdict), key=lambda f: f.step)
        first_step = decisive[0].step if decisive else None
        clip = self._clip_threshold(trace, first_step)
        return Diagnosis(verdict, decisive + notes, first_step, _remedies(verdict, trace, clip, notes), clip)

    def _join_spikes_to_the_explosion(self, findings: list[Finding]) -> None:
        """A spike at most ``sustained_steps`` steps before the explosion is where it began: one huge
        step can throw the weights off, and the runaway follows."""
        start = min(f.step for f in findings if f.points_to == "exploding")
        for spike in sorted((f for f in findings if f.rule == "norm-spike"), key=lambda f: -f.step):
            if start - self.sustained_steps <= spike.step < start:
                spike.points_to = "exploding"
                spike.message += "; the explosion follows it"
                start = spike.step

    # -- the rules ------------------------------------------------------------------------------------

    def _nonfinite(self, trace: Trace) -> list[Finding]:
        candidates = []
        for name, series in (("loss", trace.loss), ("gradient norm", trace.grad_norm),
                             ("weight norm", trace.weight_norm)):
            if series is not None and not np.isfinite(series).all():
                i = int(np.argmin(np.isfinite(series)))
                candidates.append((int(trace.steps[i]), f"the {name} is {series[i]} at step {trace.steps[i]}",
                                   {name.replace(" ", "_"): float(series[i])}))
        if trace.diverged is not None:
            step = int(trace.diverged.step)
            candidates.append((step, f"the training loop stopped the run at step {step}: {trace.diverged.reason}",
                               {}))
        if not candidates:
            return []
        step, message, values = min(candidates, key=lambda c: c[0])
        return [Finding("non-finite", step, message, "exploding", values)]

    def _norm_growth(self, trace: Trace) -> list[Finding]:
        norms, steps = trace.grad_norm, trace.steps
        ratio = self.ratio_to_running_median(norms)
        high = (ratio > self.spike_factor) | ~np.isfinite(norms)
        findings = []
        for start, stop in _runs(high):
            stretch = slice(start, stop)
            finite_ratios = ratio[stretch][np.isfinite(ratio[stretch])]
            peak = float(finite_ratios.max()) if finite_ratios.size else math.inf
            ends_nonfinite = not np.isfinite(norms[stop - 1])
            ends_in_divergence = stop == len(norms) and trace.diverged is not None
            runaway = stop - start >= self.sustained_steps or ends_nonfinite or ends_in_divergence
            median = norms[start] / ratio[start] if np.isfinite(ratio[start]) and ratio[start] > 0 else math.nan
            values = {"steps_high": stop - start, "peak_ratio": peak, "norm": float(norms[start]),
                      "running_median": float(median)}
            what = (f"‖g‖ = {norms[start]:.3g} is {ratio[start]:.3g}× its running median {median:.3g}"
                    if np.isfinite(ratio[start]) else f"‖g‖ = {norms[start]}")
            if runaway:
                tail = " and ends non-finite" if ends_nonfinite or ends_in_divergence else ""
                findings.append(Finding("norm-runaway", int(steps[start]),
                                        f"{what}; it stays above {self.spike_factor:g}× for {stop - start} "
                                        f"step(s){tail} (peak {peak:.3g}×)", "exploding", values))
            else:
                findings.append(Finding("norm-spike", int(steps[start]),
                                        f"{what} for {stop - start} step(s), then falls back", None, values))
        return findings

    def ratio_to_running_median(self, norms: np.ndarray) -> np.ndarray:
        """‖g_t‖ / median(finite ‖g‖ over the ``window`` steps before t); NaN where that is undefined."""
        n = len(norms)
        ratio = np.full(n, np.nan)
        if n <= self.min_window:
            return ratio
        finite = np.where(np.isfinite(norms), norms, np.nan)
        padded = np.concatenate([np.full(self.window, np.nan), finite])
        before = np.lib.stride_tricks.sliding_window_view(padded[:-1], self.window)  # (N, window): g[t-w:t]
        enough = np.isfinite(before).sum(axis=1) >= self.min_window
        median = np.full(n, np.nan)
        median[enough] = np.nanmedian(before[enough], axis=1)
        ok = enough & (median > 0)
        ratio[ok] = norms[ok] / median[ok]
        return ratio

    def _weight_runaway(self, trace: Trace) -> list[Finding]:
        if trace.weight_norm is None:
            return []
        finite = np.isfinite(trace.weight_norm)
        weights, steps = trace.weight_norm[finite], trace.steps[finite]
        if len(weights) < 2 or weights[0] <= 0:
            return []
        earlier = np.concatenate([np.full(self.window, weights[0]), weights[:-self.window]])[:len(weights)]
        growth = weights / earlier
        grown = np.flatnonzero(growth > self.weight_growth_factor)
        still_growing = weights[-1] >= 0.99 * weights.max()
        if not grown.size or not still_growing:
            return []
        i = int(grown[0])
        return [Finding("weight-runaway", int(steps[i]),
                        f"‖θ‖ = {weights[i]:.3g} is {growth[i]:.3g}× what it was {min(i, self.window)} step(s) "
                        f"earlier and still growing ({weights[0]:.3g} → {weights[-1]:.3g})", "exploding",
                        {"growth": float(growth[i]), "first": float(weights[0]), "last": float(weights[-1])})]

    def _update_runaway(self, trace: Trace) -> list[Finding]:
        if trace.update_ratio is None:
            return []
        long_runs = [(start, stop) for start, stop in _runs(trace.update_ratio > self.max_update_ratio)
                     if stop - start >= self.sustained_steps]
        if not long_runs:
            return []
        start, stop = long_runs[0]
        peak = float(np.max(trace.update_ratio[start:stop]))
        return [Finding("update-runaway", int(trace.steps[start]),
                        f"‖Δθ‖/‖θ‖ stays above {self.max_update_ratio:g} for {stop - start} steps (peak {peak:.3g}): "
                        f"each update is as large as the weights it changes", "exploding",
                        {"steps_high": stop - start, "peak_ratio": peak})]

    def _profile(self, trace: Trace) -> list[Finding]:
        if trace.hidden_grad_norms is None:
            return []
        spans = np.array([profile_span(row) for row in trace.hidden_grad_norms])
        usable = np.isfinite(spans)
        if not usable.any():
            return []
        median_span, limit = float(np.median(spans[usable])), math.log10(self.profile_factor)
        T = trace.hidden_grad_norms.shape[1]
        if median_span > limit:
            rule, verdict, crossed = "profile-vanishing", "vanishing", spans > limit
            how = (f"‖∂L/∂h_t‖ shrinks toward the early steps: the fitted profile is 10^{median_span:.1f} times "
                   f"smaller at t = 1 than at t = {T} (median over {usable.sum()} profile(s))")
        elif median_span < -limit:
            rule, verdict, crossed = "profile-exploding", "exploding", spans < -limit
            how = (f"‖∂L/∂h_t‖ grows toward the early steps: the fitted profile is 10^{-median_span:.1f} times "
                   f"larger at t = 1 than at t = {T} (median over {usable.sum()} profile(s))")
        else:
            return []
        step = int(trace.timestep_steps[int(np.argmax(crossed))])
        return [Finding(rule, step, how, verdict,
                        {"decades": median_span, "per_step_factor": 10 ** (median_span / (T - 1))})]

    def _clip_threshold(self, trace: Trace, first_step: int | None) -> float | None:
        """The median finite gradient norm before the trouble (the whole run when there is none)."""
        before = trace.grad_norm if first_step is None else trace.grad_norm[trace.steps < first_step]
        before = before[np.isfinite(before)]
        if before.size == 0:
            finite = trace.grad_norm[np.isfinite(trace.grad_norm)]
            before = finite[:1]
        return float(np.median(before)) if before.size else None


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The [start, stop) index ranges of the consecutive True stretches of a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def profile_span(profile: np.ndarray) -> float:
    """Decades gained from t = 1 to t = T by the least-squares line through log₁₀ of a profile; NaN if unusable."""
    t = np.arange(len(profile), dtype=float)
    keep = np.isfinite(profile)
    if keep.sum() < 3:
        return math.nan
    logs = np.log10(np.maximum(profile[keep], PROFILE_FLOOR))
    slope = np.polyfit(t[keep], logs, 1)[0]
    return float(slope * (len(profile) - 1))


def _initial_spectrum(trace: Trace) -> str:
    """' (at the first measurement ρ = …, λ₁ = …)' for the remedies; ρ of the largest gate block if stacked."""
    parts = []
    for symbol, series in (("ρ", trace.spectral_radius), ("λ₁", trace.largest_singular_value)):
        if series is not None and len(series) and np.isfinite(series[0]).all():
            parts.append(f"{symbol} = {float(np.max(series[0])):.3g}")
    return f" (at the first measurement {', '.join(parts)})" if parts else ""


def _remedies(verdict: str, trace: Trace, clip: float | None, notes: list[Finding]) -> list[str]:
    """The fixes the course teaches for this verdict, made concrete with the trace's numbers."""
    spectrum = _initial_spectrum(trace)
    clip_text = ("clip the global gradient norm before the optimizer step, at about the typical norm "
                 + (f"seen before the trouble, {clip:.3g} " if clip is not None else "")
                 + "(Pascanu et al. 2013: half to ten times the average norm still converges): "
                 "labkit.fixes.clip_grad_norm_ or train(..., clip_norm=...)")
    if verdict == "exploding":
        init = ("initialise W_hh orthogonal and scaled to a spectral radius of at most 1" + spectrum
                + "; explosion through time needs λ₁ > 1/γ, with γ = 1 for tanh (Pascanu et al. 2013, §2.1)")
        return [clip_text, "lower the learning rate (by 3-10×); with SGD, the step lr·‖g‖ is what throws "
                "the weights off the cliff", init,
                "use gated units (LSTM/GRU); they explode less often but are still clipped"]
    if verdict == "vanishing":
        return ["use gated units (LSTM, forget-gate bias 1): the additive cell path carries the gradient back",
                "initialise W_hh orthogonal (or the identity with ReLU units, IRNN) so that ρ is close to 1"
                + spectrum,
                "shorten the dependencies: shorter sequences, truncated BPTT with a curriculum, skip connections",
                "add Pascanu et al.'s (2013) regularizer Ω = Σ_t (‖∂L/∂h_{t+1} · ∂h_{t+1}/∂h_t‖ / "
                "‖∂L/∂h_{t+1}‖ − 1)², which asks each step back in time to preserve the gradient's norm"]
    if any(f.rule == "norm-spike" for f in notes):
        return ["nothing is broken; the isolated spikes are cheap to guard against: " + clip_text]
    return []
