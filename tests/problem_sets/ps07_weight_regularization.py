"""Plausible wrong answers to problem set 7 (L2 and L1 penalties, weight decay, λ₁ of W_hh over training)."""
from __future__ import annotations

from tests.problem_sets import WrongAnswer, solution_editor

edit = solution_editor("ps07_weight_regularization", "ps07.ipynb")

WRONG_ANSWERS = {
    "penalizes the biases too, although the set says not to": WrongAnswer(
        cells=edit("l2_penalty", ('for name, p in model.named_parameters() if "bias" not in name]',
                                  "for p in model.parameters()]")),
        loses=("test_l2_penalty", "test_train_step", "test_trajectory"),
    ),
    "L2 penalty λ Σ w² without the ½, and its gradient 2λw, consistently": WrongAnswer(
        cells={**edit("l2_penalty", ("return strength / 2 * torch.stack", "return strength * torch.stack")),
               **edit("l2_penalty_grads", ("else strength * p.detach()", "else 2 * strength * p.detach()"))},
        loses=("test_l2_penalty", "test_l2_grads", "test_train_step", "test_trajectory"),
    ),
    "the ½ kept in the gradient: (λ/2) w instead of λw": WrongAnswer(
        cells=edit("l2_penalty_grads", ("else strength * p.detach()", "else strength / 2 * p.detach()")),
        loses=("test_l2_grads",),
    ),
    "penalty computed after the optimizer step, so it never reaches the update": WrongAnswer(
        cells=edit("train_step", ("""    penalty = l2_penalty(model, strength)
    (loss + penalty).backward()  # the penalty's gradient λw joins the loss's before the step
    optimizer.step()
""", """    loss.backward()
    optimizer.step()
    penalty = l2_penalty(model, strength)
""")),
        loses=("test_train_step", "test_trajectory"),
    ),
    "decay applied after the gradient step: (1 − ηλ)(w − η∇L)": WrongAnswer(
        cells=edit("train_step", ("""    (loss + penalty).backward()  # the penalty's gradient λw joins the loss's before the step
    optimizer.step()
""", """    loss.backward()
    optimizer.step()
    with torch.no_grad():
        lr = optimizer.param_groups[0]["lr"]
        for name, p in model.named_parameters():
            if "bias" not in name:
                p.mul_(1 - lr * strength)
""")),
        loses=("test_train_step",),
    ),
    "L1 gradient as λ·w/|w|, which is NaN at w = 0": WrongAnswer(
        cells=edit("l1_penalty_grads", ("strength * torch.sign(p.detach())", "strength * p.detach() / p.detach().abs()")),
        loses=("test_l1_grads",),
    ),
    "L1 penalty without the absolute value: λ Σ w": WrongAnswer(
        cells=edit("l1_penalty", ("p.abs().sum()", "p.sum()")),
        loses=("test_l1_penalty",),
    ),
    "delegates the penalty to labkit.fixes.l2_penalty": WrongAnswer(
        cells={"l2_penalty": '''
from labkit.fixes import l2_penalty as _reference_l2


def l2_penalty(model, strength):
    return _reference_l2(model, strength)
'''},
        loses=("test_l2_penalty", "test_train_step", "test_trajectory"),
    ),
    "λ₁ computed as the spectral radius max |eigenvalue|": WrongAnswer(
        cells=edit("sigma_max", ("torch.linalg.svdvals(W.detach().double())[0].item()",
                                 "torch.linalg.eigvals(W.detach().double()).abs().max().item()")),
        loses=("test_sigma_max",),
    ),
    "λ₁ computed as the Frobenius norm": WrongAnswer(
        cells=edit("sigma_max", ("torch.linalg.svdvals(W.detach().double())[0].item()",
                                 "torch.linalg.matrix_norm(W.detach().double()).item()")),
        loses=("test_sigma_max", "test_trajectory"),
    ),
    "trajectory records λ₁ only after the updates, not before training": WrongAnswer(
        cells=edit("sigma_max_trajectory", ("values = [sigma_max(model.weight_hh)]", "values = []")),
        loses=("test_trajectory",),
    ),
    "smallest strength judged by the final λ₁ instead of every step": WrongAnswer(
        cells=edit("smallest_strength", ("max(sigma_max_trajectory(s)) <= BOUND", "sigma_max_trajectory(s)[-1] <= BOUND")),
        loses=("test_smallest_strength",),
    ),
}
