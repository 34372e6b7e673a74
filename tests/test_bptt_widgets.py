"""labkit.bptt_widgets, headless: the truncation study against an autograd loop that detaches between
chunks, the explorer following its sliders, and the figures showing the data they were given."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labkit import bptt_widgets as bw  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


def autograd_truncated(rho: float, chunk_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """‖∂L/∂h_t‖ and ∂L/∂W_rec by autograd, the state detached between chunks: the reference."""
    model, x, targets = bw.echo_problem(rho)
    model.record_hidden_grads = True  # keeps every h_t with retain_grad()
    chunk_len = chunk_len or x.shape[1]
    h, states = None, []
    loss = torch.zeros((), dtype=torch.float64)
    for x_chunk, z_chunk in zip(x.split(chunk_len, dim=1), targets.split(chunk_len, dim=1)):
        if h is not None:
            h = h.detach()
        out = model(x_chunk, h)
        states += model.hidden_steps
        loss = loss + bw.echo_loss(out.outputs, z_chunk)
        h = out.state
    loss.backward()
    profile = torch.stack([h_t.grad.norm() for h_t in states])
    return profile.numpy(), model.weight_hh.grad.numpy()


@pytest.mark.parametrize(("rho", "chunk_len"), [(0.7, 5), (1.5, 8), (1.5, 1), (1.0, 48)])
def test_truncation_study_equals_autograd_with_detach(rho, chunk_len):
    study = bw.truncation_study(chunk_len, rho)
    full_profile, full_grad = autograd_truncated(rho, None)
    profile, grad = autograd_truncated(rho, chunk_len)
    np.testing.assert_allclose(study.full_profile, full_profile, rtol=1e-10)
    np.testing.assert_allclose(study.truncated_profile, profile, rtol=1e-10)
    expected_error = np.linalg.norm(grad - full_grad) / np.linalg.norm(full_grad)
    assert study.relative_error == pytest.approx(expected_error, rel=1e-8, abs=1e-12)


def test_truncated_profile_keeps_only_what_the_chunk_sends_back():
    study = bw.truncation_study(8, 1.5)
    T = bw.SEQ_LEN
    assert study.boundaries == [8, 16, 24, 32, 40]
    last = slice(40, T)  # the last chunk has no future beyond it: nothing to lose
    np.testing.assert_allclose(study.truncated_profile[last], study.full_profile[last], rtol=1e-12)
    assert np.all(study.truncated_profile[:40] < study.full_profile[:40])


def test_explorer_follows_its_sliders():
    explorer = bw.TruncationExplorer(chunk_len=4, spectral_radius=1.5)
    assert isinstance(explorer, ipywidgets.VBox) and explorer.output in explorer.children
    truncated = explorer.study.truncated_profile.copy()
    assert explorer.study.relative_error > 0.5
    explorer.chunk_slider.value = bw.SEQ_LEN  # one chunk: full BPTT
    assert explorer.study.chunk_len == bw.SEQ_LEN and explorer.study.relative_error == 0.0
    np.testing.assert_array_equal(explorer.study.truncated_profile, explorer.study.full_profile)
    assert not np.allclose(explorer.study.truncated_profile, truncated)

    curve = explorer.error_curve.copy()
    assert curve.shape == (bw.SEQ_LEN,) and curve[-1] == 0.0
    explorer.rho_slider.value = 0.6
    assert explorer.study.spectral_radius == pytest.approx(0.6)
    # gradients travel less far through a contracting W_rec: short chunks lose less of it
    assert explorer.error_curve[7] < curve[7]
    assert explorer.error_curve[7] == pytest.approx(bw.truncation_study(8, 0.6).relative_error)


def test_figures_show_the_current_data():
    explorer = bw.TruncationExplorer(chunk_len=6, spectral_radius=1.2)
    left, right = explorer.figure().axes[:2]
    np.testing.assert_array_equal(left.lines[0].get_ydata(), explorer.study.full_profile)
    np.testing.assert_array_equal(left.lines[1].get_ydata(), explorer.study.truncated_profile)
    boundaries = [line for line in left.lines if line.get_label().startswith("chunk boundary")]
    assert len(boundaries) == 1 and len(left.lines) == 2 + len(explorer.study.boundaries)
    np.testing.assert_array_equal(right.lines[0].get_ydata(), explorer.error_curve[:-1])
    assert right.lines[1].get_ydata()[0] == explorer.error_curve[5]
    static = bw.TruncationExplorer.static_figure(6, 1.2)
    assert isinstance(static, Figure)
    np.testing.assert_array_equal(static.axes[0].lines[1].get_ydata(), explorer.study.truncated_profile)


def test_unrolled_graph_strikes_out_the_backward_arrows_at_chunk_boundaries():
    def struck(fig: Figure) -> int:
        return sum(text.get_text() == r"$\times$" for text in fig.axes[0].texts)

    assert struck(bw.unrolled_graph_figure(5)) == 0
    assert struck(bw.unrolled_graph_figure(9, chunk_len=3)) == 2
    assert struck(bw.unrolled_graph_figure(9, chunk_len=9)) == 0
    labels = {text.get_text() for text in bw.unrolled_graph_figure(4).axes[0].texts}
    assert {r"$h_0$", r"$h_{4}$", r"$x_{1}$", r"$L_{4}$"} <= labels


@pytest.mark.parametrize(("call", "error"), [
    (lambda: bw.truncation_study(0), ValueError),
    (lambda: bw.truncation_study(2.5), TypeError),
    (lambda: bw.truncation_study(4, -1.0), ValueError),
    (lambda: bw.unrolled_graph_figure(0), ValueError),
    (lambda: bw.unrolled_graph_figure(4, chunk_len=0), ValueError),
    (lambda: bw.echo_problem(1.0, delay=0), ValueError),
])
def test_bad_input_raises_with_a_message(call, error):
    with pytest.raises(error, match="must be"):
        call()
