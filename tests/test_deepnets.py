"""labkit.deepnets: the initializations match their formulas, the hand-written backward pass equals autograd,
the measurements and predictions agree where the theory is exact, and bad input is refused."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from labkit import deepnets  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")

FORMULAS = {  # an independent statement of each scheme's variance, (fan_in, fan_out, gain) -> Var(W_ij)
    "standard": lambda i, o, g: g * g * (2 / math.sqrt(i)) ** 2 / 12,  # U(-a, a) has variance a²/3
    "glorot": lambda i, o, g: g * g * 2 / (i + o),
    "he": lambda i, o, g: g * g * 2 / i,
    "lecun": lambda i, o, g: g * g / i,
    "orthogonal": lambda i, o, g: g * g / max(i, o),
}


# --- initializations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("init", list(deepnets.INITS))
@pytest.mark.parametrize("fans", [(400, 300), (300, 400)])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_each_init_has_the_variance_its_formula_says(init, fans, gain):
    fan_in, fan_out = fans
    expected = FORMULAS[init](fan_in, fan_out, gain)
    assert deepnets.init_variance(init, fan_in, fan_out, gain) == pytest.approx(expected, rel=1e-12)
    w = deepnets.INITS[init](fan_in, fan_out, generator=torch.Generator().manual_seed(3), gain=gain,
                             dtype=torch.float64)
    assert w.shape == (fan_out, fan_in) and w.dtype == torch.float64
    assert abs(w.mean().item()) < 4 * math.sqrt(expected / w.numel())
    # the sample variance of N draws with kurtosis κ has standard error Var·sqrt((κ - 1)/N); κ ≤ 3 for
    # all of these (uniform 1.8, Gaussian 3, orthogonal entries ≈ 3), and 5 standard errors is a safe margin
    tolerance = 5 * expected * math.sqrt(2 / w.numel())
    assert abs(w.var().item() - expected) < tolerance


@pytest.mark.parametrize("init,bound", [("standard", lambda i, o: 1 / math.sqrt(i)),
                                        ("glorot", lambda i, o: math.sqrt(6 / (i + o)))])
def test_uniform_inits_stay_inside_their_interval_and_fill_it(init, bound):
    w = deepnets.INITS[init](200, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = bound(200, 50)
    assert w.abs().max().item() <= a
    assert w.abs().max().item() > 0.99 * a


@pytest.mark.parametrize("fans", [(64, 64), (80, 32), (32, 80)])
def test_orthogonal_has_every_singular_value_equal_to_the_gain(fans):
    w = deepnets.orthogonal(*fans, generator=torch.Generator().manual_seed(1), gain=1.5, dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    torch.testing.assert_close(s, torch.full_like(s, 1.5), rtol=0, atol=1e-12)


def test_inits_are_repeatable_and_leave_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a = deepnets.he_normal(10, 20, generator=torch.Generator().manual_seed(5))
    b = deepnets.he_normal(10, 20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


# --- the network and its backward pass -----------------------------------------------------------------

def _autograd_reference(model, x, y):
    """loss.backward() through torch.nn.functional on the model's own parameters, pre-activations retained."""
    trace = model.trace(x.requires_grad_())
    for a in trace.preactivations:
        a.retain_grad()
    for h in trace.activations[1:]:
        h.retain_grad()
    loss = torch.nn.functional.mse_loss(trace.output, y)
    model.zero_grad()
    loss.backward()
    return loss, trace


@pytest.mark.parametrize("activation", list(deepnets.ACTIVATIONS))
@pytest.mark.parametrize("init", ["standard", "glorot", "he", "orthogonal"])
def test_backward_pass_equals_autograd(activation, init):
    gen = torch.Generator().manual_seed(2)
    model = deepnets.DeepMLP(7, 5, 4, 3, activation=activation, init=init, generator=gen, dtype=torch.float64)
    x = torch.randn(6, 7, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    loss, grads = deepnets.backward_pass(model, x, y)
    ref_loss, trace = _autograd_reference(model, x.clone(), y)
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=0, atol=1e-12)
    for mine, a in zip(grads.preactivation_grads, trace.preactivations, strict=True):
        torch.testing.assert_close(mine, a.grad, rtol=0, atol=1e-12)
    for mine, h in zip(grads.hidden_grads, trace.activations, strict=True):
        torch.testing.assert_close(mine, h.grad, rtol=0, atol=1e-12)
    for layer, gw, gb in zip(model.hidden, grads.weight_grads, grads.bias_grads, strict=True):
        torch.testing.assert_close(gw, layer.weight.grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(gb, layer.bias.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(grads.readout_grads[0], model.readout.weight.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(grads.readout_grads[1], model.readout.bias.grad, rtol=0, atol=1e-12)


def test_layer_gradient_norms_are_the_norms_autograd_gives():
    gen = torch.Generator().manual_seed(4)
    model = deepnets.DeepMLP(16, 16, 6, 4, activation="tanh", init="standard", generator=gen, dtype=torch.float64)
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    norms = deepnets.layer_gradient_norms(deepnets.backward_pass(model, x, y)[1])
    _, trace = _autograd_reference(model, x.clone(), y)
    expected_signal = torch.stack([torch.linalg.matrix_norm(a.grad) for a in trace.preactivations])
    expected_weight = torch.stack([torch.linalg.matrix_norm(layer.weight.grad) for layer in model.hidden])
    torch.testing.assert_close(norms.signal, expected_signal, rtol=1e-12, atol=0)
    torch.testing.assert_close(norms.weight, expected_weight, rtol=1e-12, atol=0)


def test_product_of_layer_jacobians_is_the_input_output_jacobian():
    gen = torch.Generator().manual_seed(6)
    model = deepnets.DeepMLP(5, 4, 3, 2, activation="tanh", init="glorot", generator=gen, dtype=torch.float64)
    x = torch.randn(5, generator=gen, dtype=torch.float64)
    jacobians = deepnets.layer_jacobians(model, x)
    assert [tuple(j.shape) for j in jacobians] == [(4, 5), (4, 4), (4, 4)]
    product = jacobians[2] @ jacobians[1] @ jacobians[0]
    expected = torch.autograd.functional.jacobian(lambda v: model.trace(v.unsqueeze(0)).activations[-1][0], x)
    torch.testing.assert_close(product, expected, rtol=0, atol=1e-12)


def test_network_is_repeatable_and_starts_with_zero_biases():
    a = deepnets.DeepMLP(4, 6, 3, 2, init="he", generator=torch.Generator().manual_seed(9))
    b = deepnets.DeepMLP(4, 6, 3, 2, init="he", generator=torch.Generator().manual_seed(9))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in [*a.hidden, a.readout])


def test_activation_derivatives_match_autograd_and_their_bound():
    a = torch.linspace(-8, 8, 2001, dtype=torch.float64, requires_grad=True)
    for name, sigma in deepnets.ACTIVATIONS.items():
        (grad,) = torch.autograd.grad(sigma(a).sum(), a)
        derivative = deepnets.activation_derivative(name, a.detach())
        torch.testing.assert_close(derivative, grad, rtol=0, atol=1e-12)
        assert derivative.max().item() == pytest.approx(deepnets.DERIVATIVE_BOUND[name], abs=1e-12)


# --- measurement against prediction ---------------------------------------------------------------------

def test_linear_orthogonal_network_preserves_the_gradient_norm_exactly():
    profile = deepnets.measure_depth_profile("linear", "orthogonal", 12, width=32, seeds=[0, 1], loss="random")
    np.testing.assert_allclose(profile.signal_ratios(), 1.0, rtol=1e-10)
    np.testing.assert_allclose(deepnets.mean_field_profile("linear", "orthogonal", 12, width=32).signal_ratio,
                               1.0, rtol=1e-12)


@pytest.mark.parametrize("gain2", [0.5, 1.0, 2.0, 3.0])
def test_mean_field_relu_factor_is_half_the_variance_scale(gain2):
    depth = 7
    predicted = deepnets.mean_field_profile("relu", "lecun", depth, width=100, gain=math.sqrt(gain2))
    np.testing.assert_allclose(predicted.backward_factor, gain2 / 2, rtol=1e-12)
    np.testing.assert_allclose(predicted.signal_ratio, (gain2 / 2) ** ((depth - np.arange(1, depth + 1)) / 2),
                               rtol=1e-12)


def test_mean_field_linear_factor_is_the_variance_scale():
    predicted = deepnets.mean_field_profile("linear", "standard", 5, width=64)
    np.testing.assert_allclose(predicted.backward_factor, 1 / 3, rtol=1e-12)
    np.testing.assert_allclose(predicted.preactivation_variance, (1 / 3) ** np.arange(1, 6), rtol=1e-12)


def test_mean_field_tanh_variance_recursion_matches_a_monte_carlo_estimate():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(400_000, generator=gen, dtype=torch.float64)
    predicted = deepnets.mean_field_profile("tanh", "he", 3, width=50)
    q1 = predicted.preactivation_variance[0]
    q2 = 2.0 * torch.tanh(math.sqrt(q1) * z).pow(2).mean().item()
    chi1 = 2.0 * (1 - torch.tanh(math.sqrt(q1) * z).pow(2)).pow(2).mean().item()
    assert q1 == pytest.approx(2.0)
    assert predicted.preactivation_variance[1] == pytest.approx(q2, rel=5e-3)
    assert predicted.backward_factor[0] == pytest.approx(chi1, rel=5e-3)


@pytest.mark.parametrize("activation,init,depth,gain", [("tanh", "standard", 8, 1.0), ("tanh", "glorot", 8, 1.0),
                                                        ("relu", "lecun", 12, 1.0), ("relu", "he", 12, 1.0)])
def test_measured_first_to_last_ratio_is_near_the_mean_field_prediction(activation, init, depth, gain):
    profile = deepnets.measure_depth_profile(activation, init, depth, width=128, batch_size=32, seeds=range(4),
                                             loss="random")
    measured = np.exp(np.log(profile.first_to_last()[0]).mean())
    predicted = deepnets.mean_field_profile(activation, init, depth, width=128, gain=gain).signal_ratio[0]
    assert measured == pytest.approx(predicted, rel=0.25)


def test_both_losses_are_measured_on_the_same_networks():
    both = deepnets.measure_depth_profiles("relu", "he", 5, width=16, batch_size=8, seeds=[0, 1])
    for loss, profile in both.items():
        alone = deepnets.measure_depth_profile("relu", "he", 5, width=16, batch_size=8, seeds=[0, 1], loss=loss)
        np.testing.assert_array_equal(profile.signal, alone.signal)
        np.testing.assert_array_equal(profile.weight, alone.weight)
    # the MSE measurement is the hand-written backward pass of the MSE loss on the seed's network and batch
    gen = torch.Generator().manual_seed(1)
    model = deepnets.DeepMLP(16, 16, 5, 10, activation="relu", init="he", generator=gen, dtype=torch.float64)
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 10, generator=gen, dtype=torch.float64)
    expected = deepnets.layer_gradient_norms(deepnets.backward_pass(model, x, y)[1])
    np.testing.assert_array_equal(both["mse"].signal[1], expected.signal.numpy())


def test_depth_profile_ratios_end_at_one():
    profile = deepnets.measure_depth_profile("tanh", "glorot", 4, width=16, seeds=[0, 1, 2])
    assert profile.signal.shape == profile.weight.shape == (3, 4)
    np.testing.assert_array_equal(profile.signal_ratios()[:, -1], 1.0)
    np.testing.assert_array_equal(profile.weight_ratios()[:, -1], 1.0)
    signal, weight = profile.first_to_last()
    np.testing.assert_array_equal(signal, profile.signal[:, 0] / profile.signal[:, -1])
    np.testing.assert_array_equal(weight, profile.weight[:, 0] / profile.weight[:, -1])


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,error", [
    ({"fan_in": 0, "fan_out": 3}, ValueError),
    ({"fan_in": 3, "fan_out": 2.5}, TypeError),
    ({"fan_in": 3, "fan_out": 3, "gain": -1.0}, ValueError),
    ({"fan_in": 3, "fan_out": 3, "gain": float("nan")}, ValueError),
    ({"fan_in": 3, "fan_out": 3, "generator": 0}, TypeError),
])
@pytest.mark.parametrize("init", list(deepnets.INITS))
def test_inits_refuse_bad_arguments(init, kwargs, error):
    kwargs = {"generator": torch.Generator().manual_seed(0), **kwargs}
    with pytest.raises(error):
        deepnets.INITS[init](**kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"activation": "softplus"}, ValueError, "activation"),
    ({"init": "xavier"}, ValueError, "init"),
    ({"depth": 0}, ValueError, "depth"),
    ({"width": "8"}, TypeError, "width"),
    ({"gain": 0.0}, ValueError, "gain"),
])
def test_network_refuses_bad_arguments(kwargs, error, match):
    arguments = {"in_features": 4, "width": 8, "depth": 2, "out_features": 1, **kwargs}
    with pytest.raises(error, match=match):
        deepnets.DeepMLP(**arguments)


def test_bad_batches_are_refused_with_the_expected_shape_in_the_message():
    model = deepnets.DeepMLP(4, 8, 2, 3)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        model(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        model(torch.randn(4))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError):
        model(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="target"):
        deepnets.backward_pass(model, torch.randn(2, 4), torch.randn(2, 2))
    with pytest.raises(ValueError, match="grad_output"):
        deepnets.backpropagate(model, model.trace(torch.randn(2, 4)), torch.randn(3, 3))
    with pytest.raises(ValueError, match="one input"):
        deepnets.layer_jacobians(model, torch.randn(2, 4))


def test_measurement_and_prediction_refuse_bad_arguments():
    with pytest.raises(ValueError, match="seeds"):
        deepnets.measure_depth_profile("tanh", "glorot", 3, seeds=[])
    with pytest.raises(ValueError, match="loss"):
        deepnets.measure_depth_profile("tanh", "glorot", 3, loss="cross_entropy")
    with pytest.raises(ValueError, match="losses"):
        deepnets.measure_depth_profiles("tanh", "glorot", 3, losses=[])
    with pytest.raises(ValueError, match="input_second_moment"):
        deepnets.mean_field_profile("tanh", "glorot", 3, input_second_moment=-1.0)
    with pytest.raises(ValueError, match="init"):
        deepnets.init_variance("kaiming", 3, 3)


# --- the explorer ----------------------------------------------------------------------------------------

def test_depth_explorer_follows_its_controls():
    import ipywidgets

    from labkit.deepnet_widgets import SEEDS, DepthExplorer

    explorer = DepthExplorer(depth=6)
    assert isinstance(explorer, ipywidgets.VBox) and explorer.output in explorer.children
    assert explorer.profile.signal.shape == (len(SEEDS), 6)
    first = explorer.profile.first_to_last()[0]
    assert np.all(first < 0.1)  # tanh with the standard init: the gradient shrinks ~√3 per layer
    explorer.depth_slider.value = 9
    assert explorer.profile.signal.shape == (len(SEEDS), 9) and explorer.predicted.shape == (9,)
    explorer.init_menu.value = "glorot"
    assert np.all(explorer.profile.first_to_last()[0] > 0.2)


def test_depth_explorer_static_figure_shows_its_data():
    from matplotlib.figure import Figure

    from labkit.deepnet_widgets import DepthExplorer, depth_data

    fig = DepthExplorer.static_figure("relu", "he", 5)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    profile, predicted = depth_data("relu", "he", 5)
    geometric_mean = np.exp(np.log(profile.signal_ratios()).mean(axis=0))
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), geometric_mean)
    assert [line.get_label() for line in fig.axes[0].lines].count("mean-field prediction") == 1
    np.testing.assert_allclose(fig.axes[0].lines[-2].get_ydata(), predicted)
    assert fig.axes[0].get_yscale() == "log"


def test_layer_profile_plot_refuses_an_empty_mapping():
    from labkit.deepnet_widgets import plot_layer_profiles

    with pytest.raises(TypeError, match="profiles"):
        plot_layer_profiles({})
