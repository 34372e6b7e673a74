"""labkit: the runnable half of the Exploding Gradients course.

One idea per module, each small enough to read in one sitting:

- ``labkit.device``: where to compute (CUDA, then MPS, then CPU) and seeding.
- ``labkit.tasks``: the adding problem, copy task and temporal order, with their memoryless baselines.
- ``labkit.models``: ScalarRNN, ElmanRNN and LSTM written out step by step, convertible to ``torch.nn``.
- ``labkit.bptt``: backpropagation through time by hand, with per-timestep gradient norms.
- ``labkit.fused_lstm``: the LSTM's hand-written backward through time as one autograd node (what it trains with).
- ``labkit.train``: one training loop with pluggable clipping, penalties and callbacks.
- ``labkit.monitor`` / ``labkit.detector``: record gradient signals; diagnose exploding or vanishing.
- ``labkit.fixes``: clipping and weight penalties.
- ``labkit.cliff``, ``labkit.plots``, ``labkit.widgets``: the loss cliff, the course's figures, explorers.
- ``labkit.grading``: helpers for the problem sets' tests.

The chapters' experiments, each with its explorer (``*_widgets``):

- ``labkit.quadratic`` (ch. 1): gradient descent on a quadratic, predicted exactly.
- ``labkit.deepnets`` (ch. 2): deep MLPs by hand; gradient size across depth, measured and predicted.
- ``labkit.traces`` (ch. 5): recorded exploding, vanishing and healthy runs for the detector.
- ``labkit.clip_study`` (ch. 6): a tanh RNN that diverges unclipped and trains clipped; η × τ grids.
- ``labkit.regularization_study`` (ch. 7): λ₁ of W_hh under L1/L2 penalties, against clipping.
- ``labkit.rnn_vs_lstm`` (ch. 8): the adding-problem race and gradient reach through time.
- ``labkit.field_guide`` (ch. 9): a broken configuration and the ladder of fixes.
- ``labkit.classics`` (appendix A): literature claims reproduced, each with a computed verdict.

Import the module you need, e.g. ``from labkit.models import ElmanRNN``.
"""
__version__ = "0.1.0"
