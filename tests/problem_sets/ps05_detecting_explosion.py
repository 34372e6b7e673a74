"""Plausible wrong answers to problem set 5 (detecting exploding gradients), each of which must lose points."""
from tests.problem_sets import WrongAnswer

WRONG_ANSWERS = {
    "a fixed threshold: five steps in a row with a norm above 1.0 is an explosion": WrongAnswer(
        cells={"first_explosion_step": '''
def first_explosion_step(grad_norm, loss, window=WINDOW, spike_factor=SPIKE_FACTOR, sustained_steps=SUSTAINED_STEPS):
    norms = np.asarray(grad_norm, dtype=float)
    losses = np.asarray(loss, dtype=float)
    nonfinite = ~np.isfinite(norms) | ~np.isfinite(losses)
    high = (norms > 1.0) | nonfinite
    start = None
    for t in range(len(norms) + 1):
        if t < len(norms) and high[t]:
            if start is None:
                start = t
            continue
        if start is not None:
            if t - start >= sustained_steps or nonfinite[t - 1]:
                return start
            start = None
    return None
'''},
        loses=("test_first_explosion_step", "test_diagnose", "test_mystery"),
    ),
    "non-finite values ignored: a NaN norm compares False, so a run that overflows fast is missed": WrongAnswer(
        cells={"first_explosion_step": '''
def first_explosion_step(grad_norm, loss, window=WINDOW, spike_factor=SPIKE_FACTOR, sustained_steps=SUSTAINED_STEPS):
    norms = np.asarray(grad_norm, dtype=float)
    high = running_median_ratio(norms, window) > spike_factor
    start = None
    for t in range(len(norms) + 1):
        if t < len(norms) and high[t]:
            if start is None:
                start = t
            continue
        if start is not None:
            if t - start >= sustained_steps:
                return start
            start = None
    return None
'''},
        loses=("test_first_explosion_step", "test_diagnose"),
    ),
    "the profile read backwards: index 0 taken as t = T, the step next to the loss": WrongAnswer(
        cells={"profile_decades": '''
def profile_decades(profile):
    profile = np.asarray(profile, dtype=float)[::-1]  # "the gradient starts at the loss, index 0"
    t = np.arange(1, len(profile) + 1)
    keep = np.isfinite(profile)
    if keep.sum() < 3:
        return math.nan
    logs = np.log10(np.maximum(profile[keep], FLOOR))
    slope = np.polyfit(t[keep], logs, 1)[0]
    return float(slope * (len(profile) - 1))
'''},
        loses=("test_profile_decades", "test_diagnose", "test_mystery"),
    ),
    "a running mean instead of a running median: one early spike hides the onset": WrongAnswer(
        cells={"running_median_ratio": '''
def running_median_ratio(grad_norm, window=WINDOW, min_window=MIN_WINDOW):
    norms = np.asarray(grad_norm, dtype=float)
    ratio = np.full(len(norms), np.nan)
    for t in range(len(norms)):
        before = norms[max(0, t - window):t]
        before = before[np.isfinite(before)]
        if len(before) >= min_window:
            mean = np.mean(before)
            if mean > 0:
                ratio[t] = norms[t] / mean
    return ratio
'''},
        loses=("test_running_median_ratio", "test_first_explosion_step", "test_diagnose"),
    ),
    "the current step inside its own window": WrongAnswer(
        cells={"running_median_ratio": '''
def running_median_ratio(grad_norm, window=WINDOW, min_window=MIN_WINDOW):
    norms = np.asarray(grad_norm, dtype=float)
    ratio = np.full(len(norms), np.nan)
    for t in range(len(norms)):
        around = norms[max(0, t - window + 1):t + 1]
        around = around[np.isfinite(around)]
        if len(around) >= min_window:
            median = np.median(around)
            if median > 0:
                ratio[t] = norms[t] / median
    return ratio
'''},
        loses=("test_running_median_ratio",),
    ),
    "an underflowed 0 in the profile sent through log10: -inf breaks the fit": WrongAnswer(
        cells={"profile_decades": '''
def profile_decades(profile):
    profile = np.asarray(profile, dtype=float)
    t = np.arange(1, len(profile) + 1)
    keep = np.isfinite(profile)
    if keep.sum() < 3:
        return math.nan
    slope = np.polyfit(t[keep], np.log10(profile[keep]), 1)[0]
    return float(slope * (len(profile) - 1))
'''},
        loses=("test_profile_decades", "test_mystery"),
    ),
    "the step at which the runaway is confirmed returned, not the step it started": WrongAnswer(
        cells={"first_explosion_step": '''
def first_explosion_step(grad_norm, loss, window=WINDOW, spike_factor=SPIKE_FACTOR, sustained_steps=SUSTAINED_STEPS):
    norms = np.asarray(grad_norm, dtype=float)
    losses = np.asarray(loss, dtype=float)
    nonfinite = ~np.isfinite(norms) | ~np.isfinite(losses)
    high = (running_median_ratio(norms, window) > spike_factor) | nonfinite
    start = None
    for t in range(len(norms)):
        if not high[t]:
            start = None
            continue
        start = t if start is None else start
        if t - start + 1 >= sustained_steps or nonfinite[t]:
            return t
    return None
'''},
        loses=("test_first_explosion_step", "test_diagnose"),
    ),
    "delegating the diagnosis to labkit's ExplosionDetector": WrongAnswer(
        cells={"diagnose": '''
def diagnose(run):
    from labkit.detector import ExplosionDetector
    d = ExplosionDetector().diagnose(grad_norm=run.grad_norm, loss=run.loss, hidden_grad_norms=run.profiles,
                                     timestep_steps=run.profile_steps)
    return d.verdict, d.first_step
'''},
        loses=("test_diagnose",),
    ),
    "delegating the running median to labkit's detector": WrongAnswer(
        cells={"running_median_ratio": '''
def running_median_ratio(grad_norm, window=WINDOW, min_window=MIN_WINDOW):
    import labkit.detector
    detector = labkit.detector.ExplosionDetector(window=window, min_window=min_window)
    return detector.ratio_to_running_median(np.asarray(grad_norm, dtype=float))
'''},
        loses=("test_running_median_ratio", "test_first_explosion_step"),
    ),
}
