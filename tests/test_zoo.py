import pytest
import torch

from jqodi.errors import ModelError
from jqodi.core.zoo import available_models, build_model, register_model

PAPER_CUTS = {"lenet": 4, "vgg": 5, "resnet20": 4}  # footnotes 4-6


@pytest.mark.parametrize("name", sorted(PAPER_CUTS))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
def test_paper_models_have_the_paper_partition_points(name, shape):
    m = build_model(name, shape, num_classes=10, width=0.25, seed=0)
    assert len(m.cuts) == PAPER_CUTS[name]
    x = torch.randn(3, *shape)
    m.eval()
    for cut in m.cuts:
        shallow, deep = m.split(cut)
        assert torch.allclose(deep(shallow(x)), m(x), atol=1e-5)
    assert m(x).shape == (3, 10)


def test_seed_makes_weights_reproducible():
    a = build_model("lenet", (1, 28, 28), 10, 0.25, seed=3)
    b = build_model("lenet", (1, 28, 28), 10, 0.25, seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_bad_requests_raise_model_errors():
    with pytest.raises(ModelError, match="unknown model"):
        build_model("alexnet")
    with pytest.raises(ModelError, match="cut 9 is out of range"):
        build_model("lenet", (1, 28, 28), width=0.25).shallow(9)
    with pytest.raises(ModelError, match="too small"):
        build_model("lenet", (1, 4, 4))


def test_user_models_can_be_registered():
    def tiny(shape, n, width):
        return [("flat", torch.nn.Flatten()), ("fc", torch.nn.Linear(shape[0] * shape[1] * shape[2], n))]

    register_model("tiny-test", tiny, replace=True)
    assert "tiny-test" in available_models()
    assert build_model("tiny-test", (1, 4, 4), 3).cuts == [1]


def test_absurd_models_are_refused_before_anything_large_is_allocated():
    with pytest.raises(ModelError, match="parameters; at most 268,435,456"):
        build_model("vgg", (3, 32, 32), 10, width=16)  # 4.3 G parameters: refused on the meta device
    with pytest.raises(ModelError, match="finite number > 0"):
        build_model("lenet", width=float("inf"))
    with pytest.raises(ModelError, match="elements per sample"):
        build_model("lenet", (3, 20000, 20000))
    with pytest.raises(ModelError, match="activation elements per sample"):
        build_model("resnet20", (3, 4096, 4096))  # 272 k weights, 0.6 G activation elements


def test_the_size_check_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    build_model("lenet", (1, 28, 28), 10, 0.25, seed=1)
    assert torch.equal(state, torch.get_rng_state())


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["lenet", "vgg", "resnet20"]),
       shape=st.tuples(st.integers(-2, 4), st.integers(-2, 40), st.integers(-2, 40)),
       classes=st.integers(-1, 50), width=st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                                    st.floats(0.01, 0.2)))
def test_any_request_builds_or_raises_a_model_error(name, shape, classes, width):
    try:
        m = build_model(name, shape, classes, width, seed=0)
    except ModelError as e:
        assert "\n" not in str(e)
    else:
        assert m(torch.zeros(2, *shape)).shape == (2, classes)


def test_a_width_too_large_for_torch_sizes_is_a_model_error():
    # found by the fuzz test above: torch.empty raises TypeError when a size overflows int64
    with pytest.raises(ModelError, match="cannot be built"):
        build_model("resnet20", (1, 1, 1), 2, 5.764607523034235e17)
