"""Plausible wrong answers to problem set 1 (gradient descent), each of which must lose points."""
from tests.problem_sets import WrongAnswer

WRONG_ANSWERS = {
    "critical learning rate from λ_min instead of λ_max": WrongAnswer(
        cells={"critical_lr": '''
def critical_lr(A):
    return 2.0 / torch.linalg.eigvalsh(A).min().item()
'''},
        loses=("test_critical_lr", "test_behaviour"),
    ),
    "1/λ_max (where overshooting starts) instead of 2/λ_max": WrongAnswer(
        cells={"critical_lr": '''
def critical_lr(A):
    return 1.0 / torch.linalg.eigvalsh(A).max().item()
'''},
        loses=("test_critical_lr",),
    ),
    "the largest entry of A instead of its largest eigenvalue": WrongAnswer(
        cells={"critical_lr": '''
def critical_lr(A):
    return 2.0 / A.max().item()
'''},
        loses=("test_critical_lr", "test_behaviour"),
    ),
    "the trace of A instead of its largest eigenvalue": WrongAnswer(
        cells={"critical_lr": '''
def critical_lr(A):
    return 2.0 / torch.trace(A).item()
'''},
        loses=("test_critical_lr", "test_behaviour"),
    ),
    "update with the wrong sign, θ + η∇f(θ)": WrongAnswer(
        cells={"gd_step": '''
def gd_step(f, theta, lr):
    theta = theta.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(theta), theta)
    return (theta + lr * grad).detach()
'''},
        loses=("test_gd_step", "test_gradient_descent", "test_measured_factors"),
    ),
    "in-place update of the caller's tensor; gradients accumulate in .grad across steps": WrongAnswer(
        cells={"gd_step": '''
def gd_step(f, theta, lr):
    theta.requires_grad_(True)
    f(theta).backward()
    with torch.no_grad():
        theta -= lr * theta.grad
    return theta
'''},
        loses=("test_gd_step", "test_gradient_descent"),
    ),
    "in-place update of a leaf that requires grad, outside torch.no_grad (autograd raises)": WrongAnswer(
        cells={"gd_step": '''
def gd_step(f, theta, lr):
    theta = theta.clone().requires_grad_(True)
    f(theta).backward()
    theta -= lr * theta.grad
    return theta
'''},
        loses=("test_gd_step",),
    ),
    "the loop records one tensor updated in place, so every row is the last iterate": WrongAnswer(
        cells={"gradient_descent": '''
def gradient_descent(f, theta0, lr, steps):
    theta = theta0.clone()
    iterates = [theta]
    for _ in range(steps):
        theta.copy_(gd_step(f, theta, lr))
        iterates.append(theta)
    return torch.stack(iterates)
'''},
        loses=("test_gradient_descent",),
    ),
    "the loop steps from θ_0 every time instead of from the last iterate": WrongAnswer(
        cells={"gradient_descent": '''
def gradient_descent(f, theta0, lr, steps):
    iterates = [theta0.clone()]
    for _ in range(steps):
        iterates.append(gd_step(f, theta0, lr))
    return torch.stack(iterates)
'''},
        loses=("test_gradient_descent",),
    ),
    "the quadratic without the ½ (the curvature doubles)": WrongAnswer(
        cells={"quadratic": '''
def quadratic(A, b, theta):
    return theta @ A @ theta - b @ theta
'''},
        loses=("test_quadratic", "test_measured_factors"),
    ),
    "the contraction factor from λ_max alone, |1 − ηλ_max|": WrongAnswer(
        cells={"contraction_factor": '''
def contraction_factor(A, lr):
    return abs(1.0 - lr * torch.linalg.eigvalsh(A).max().item())
'''},
        loses=("test_contraction_factor",),
    ),
    "oscillation taken for divergence: 'diverging' as soon as η > 1/λ_max": WrongAnswer(
        cells={"behaviour": '''
behaviour = {}
for lr in LEARNING_RATES:
    behaviour[lr] = "monotone" if lr <= critical_lr(A_GIVEN) / 2 else "diverging"
'''},
        loses=("test_behaviour",),
    ),
}
