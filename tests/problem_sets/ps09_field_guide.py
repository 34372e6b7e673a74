"""Plausible wrong answers to problem set 9 (the capstone), each of which must lose points."""
from tests.problem_sets import WrongAnswer, solution_editor

edit = solution_editor("ps09_field_guide", "ps09.ipynb")

WRONG_ANSWERS = {
    "only lowers the learning rate, so far that the run no longer reaches the target in budget": WrongAnswer(
        cells={"fixed_config": "FIXED = replace(BROKEN, lr=1e-3)\n"},
        loses=("test_fixed_config",),
    ),
    "hands back the original exploding configuration": WrongAnswer(
        cells={"fixed_config": "FIXED = BROKEN\n"},
        loses=("test_fixed_config",),
    ),
    "clips alone: the run no longer diverges but learns nothing": WrongAnswer(
        cells={"fixed_config": "FIXED = replace(BROKEN, clip_norm=1.0)\n"},
        loses=("test_fixed_config",),
    ),
    "buys the target with more updates than the budget allows": WrongAnswer(
        cells={"fixed_config": 'FIXED = replace(BROKEN, cell="lstm", optimizer="adam", lr=2e-2, clip_norm=1.0, steps=400)\n'},
        loses=("test_fixed_config",),
    ),
    "clips after the optimizer step, when the update has already used the raw gradient": WrongAnswer(
        cells=edit("train_step", (
            "        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n    optimizer.step()\n",
            "        optimizer.step()\n        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n")),
        loses=("test_train_step",),
    ),
    "clips each parameter tensor by its own norm instead of the global norm": WrongAnswer(
        cells=edit("train_step", (
            "        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)\n",
            "        params = list(model.parameters())\n"
            "        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))\n"
            "        for p in params:\n"
            "            torch.nn.utils.clip_grad_norm_([p], max_norm)\n")),
        loses=("test_train_step",),
    ),
    "forgets to zero the gradients, so they accumulate across steps": WrongAnswer(
        cells=edit("train_step", ("    optimizer.zero_grad()\n", "")),
        loses=("test_train_step",),
    ),
    "delegates to labkit's reference train_step": WrongAnswer(
        cells={"train_step": "def train_step(model, optimizer, x, y, loss_fn, max_norm):\n"
                             "    return fg.train_step(model, optimizer, x, y, loss_fn, max_norm)\n"},
        loses=("test_train_step",),
    ),
    "diagnoses vanishing gradients": WrongAnswer(
        cells={"diagnosis": 'observed_symptoms = {"D", "E"}\ncause = 3\n'},
        loses=("test_diagnosis",),
    ),
}
