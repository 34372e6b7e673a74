"""labkit: the runnable half of the Exploding Gradients course.

One idea per module, each small enough to read in one sitting:

- ``labkit.device``: where to compute (CUDA, then MPS, then CPU) and seeding.
- ``labkit.tasks``: the adding problem, copy task and temporal order, with their memoryless baselines.
- ``labkit.models``: ScalarRNN, ElmanRNN and LSTM written out step by step, convertible to ``torch.nn``.
- ``labkit.bptt``: backpropagation through time by hand, with per-timestep gradient norms.
- ``labkit.train``: one training loop with pluggable clipping, penalties and callbacks.
- ``labkit.monitor`` / ``labkit.detector``: record gradient signals; diagnose exploding or vanishing.
- ``labkit.fixes``: clipping and weight penalties.
- ``labkit.cliff``, ``labkit.plots``, ``labkit.widgets``: the loss cliff, the course's figures, explorers.
- ``labkit.grading``: helpers for the problem sets' tests.

Import the module you need, e.g. ``from labkit.models import ElmanRNN``.
"""
__version__ = "0.1.0"
