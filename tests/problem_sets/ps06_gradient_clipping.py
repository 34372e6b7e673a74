"""Plausible wrong answers to problem set 6 (gradient clipping), each of which must lose points, and
correct variants that must keep full marks."""
from tests.problem_sets import WrongAnswer

WRONG_ANSWERS = {
    "each parameter clipped by its own norm instead of the global norm": WrongAnswer(
        cells={"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for g in grads:
        g.mul_(torch.clamp(max_norm / (torch.linalg.vector_norm(g) + 1e-6), max=1.0))
    return total_norm
'''},
        loses=("test_clip_grad_norm",),
    ),
    "clip factor not capped at 1: gradients below the threshold are scaled up to length τ": WrongAnswer(
        cells={"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for g in grads:
        g.mul_(max_norm / (total_norm + 1e-6))
    return total_norm
'''},
        loses=("test_clip_grad_norm", "test_train_step"),
    ),
    "rescales to length min(‖g‖, τ) by dividing by ‖g‖: all-zero gradients become NaN": WrongAnswer(
        cells={"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    for g in grads:
        g.mul_(torch.clamp(total_norm, max=max_norm) / total_norm)
    return total_norm
'''},
        loses=("test_clip_grad_norm_edge_cases",),
    ),
    "returns the norm after clipping instead of before": WrongAnswer(
        cells={"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    factor = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(factor)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
'''},
        loses=("test_clip_grad_norm", "test_train_step"),
    ),
    "reads model.parameters() twice, so a generator is empty the second time": WrongAnswer(
        cells={"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    total_norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters if p.grad is not None]))
    factor = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(factor)
    return total_norm
'''},
        loses=("test_clip_grad_norm_edge_cases", "test_train_step", "test_clipped_run"),
    ),
    "delegates to torch.nn.utils.clip_grad_norm_": WrongAnswer(
        cells={"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
'''},
        loses=("test_clip_grad_norm", "test_clip_grad_norm_edge_cases", "test_train_step", "test_clipped_run"),
    ),
    "clips the weights instead of their gradients (value clipping)": WrongAnswer(
        cells={"clip_grad_value": '''
def clip_grad_value_(parameters, clip_value):
    with torch.no_grad():
        for p in parameters:
            p.clamp_(min=-clip_value, max=clip_value)
'''},
        loses=("test_clip_grad_value",),
    ),
    "threshold from the mean over every recorded norm, not the first `warmup`": WrongAnswer(
        cells={"choose_threshold": '''
def choose_threshold(norms, warmup=100, factor=1.0):
    values = torch.as_tensor(norms, dtype=torch.float64).flatten()
    finite = values[torch.isfinite(values)]
    if finite.numel() == 0:
        raise ValueError("no finite norm")
    return factor * finite.mean().item()
'''},
        loses=("test_choose_threshold",),
    ),
    "non-finite norms not left out of the mean": WrongAnswer(
        cells={"choose_threshold": '''
def choose_threshold(norms, warmup=100, factor=1.0):
    early = torch.as_tensor(norms, dtype=torch.float64).flatten()[:warmup]
    return factor * early.mean().item()
'''},
        loses=("test_choose_threshold",),
    ),
    "the median instead of the mean": WrongAnswer(
        cells={"choose_threshold": '''
def choose_threshold(norms, warmup=100, factor=1.0):
    early = torch.as_tensor(norms, dtype=torch.float64).flatten()[:warmup]
    finite = early[torch.isfinite(early)]
    if finite.numel() == 0:
        raise ValueError("no finite norm")
    return factor * finite.median().item()
'''},
        loses=("test_choose_threshold",),
    ),
    "clipping after the optimizer step": WrongAnswer(
        cells={"train_step": '''
def train_step(model, loss_fn, batch, optimizer, max_norm):
    optimizer.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    norm = clip_grad_norm_(model.parameters(), max_norm)
    return loss.item(), float(norm)
'''},
        loses=("test_train_step", "test_clipped_run"),
    ),
    "gradients never zeroed, so they accumulate across steps": WrongAnswer(
        cells={"train_step": '''
def train_step(model, loss_fn, batch, optimizer, max_norm):
    loss = loss_fn(model, batch)
    loss.backward()
    norm = clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss.item(), float(norm)
'''},
        loses=("test_train_step",),
    ),
    "a threshold so large that clipping never acts (ten thousand times the mean)": WrongAnswer(
        cells={"clip_threshold": '''
clip_threshold = choose_threshold(PROBE_NORMS, warmup=100, factor=1e4)
'''},
        loses=("test_clipped_run",),
    ),
}

# Correct answers written differently from the solution: each must keep full marks. Algorithm 1 of Pascanu
# et al. tests ‖g‖ ≥ τ; testing ‖g‖ > τ differs only at ‖g‖ = τ, where the factor τ/‖g‖ is 1 anyway.
ACCEPTED_VARIANTS = {
    "Algorithm 1 with a branch on ‖g‖ > τ and the exact factor τ/‖g‖": {"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.tensor(0.0)
    if grads:
        total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / total)
    return total
'''},
    "Algorithm 1 with a branch on ‖g‖ ≥ τ and the exact factor τ/‖g‖": {"clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.tensor(0.0)
    if grads:
        total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    if total >= max_norm:
        for g in grads:
            g.mul_(max_norm / total)
    return total
'''},
    "a Python-float norm and a threshold of τ = 1, chosen without the rule": {
        "clip_grad_norm": '''
def clip_grad_norm_(parameters, max_norm):
    grads = [p.grad for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    if total > max_norm:
        with torch.no_grad():
            for g in grads:
                g *= max_norm / total
    return total
''',
        "clip_threshold": '''
clip_threshold = 1.0
'''},
}
