"""The model registry: every name builds, takes the shapes the data brings, and rebuilds from its bundle config."""

import json

import pytest
import torch

from medflow.models.tabular import BUILDERS, IMAGE_MODELS, TREE_MODEL, build

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 64, 64)]


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_image_models_take_every_input_size(name, shape):
    model = build(name, in_shape=list(shape), n_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_mnist_mlp_is_the_seeds_network():
    model = build("mnist_mlp", in_shape=[1, 28, 28], n_classes=10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 10)]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.2]


@pytest.mark.parametrize(("shape", "head_in"), [((1, 28, 28), 7 * 7 * 128), ((3, 32, 32), 8 * 8 * 128)])
def test_convnet_head_is_sized_from_the_input(shape, head_in):
    model = build("cifar_convnet", in_shape=list(shape), n_classes=10)
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [64, 128]
    assert model[-1].in_features == head_in


def test_a_bundle_config_rebuilds_the_same_network():
    config = {"name": "resnet_small", "in_shape": [3, 16, 16], "n_classes": 4}
    torch.manual_seed(0)
    model = build(**config).eval()
    again = build(**json.loads(json.dumps(config))).eval()  # as Predictor reads model.json
    again.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(model(x), again(x))


def test_registry_names_match_params_and_unknown_names_fail():
    from medflow.params import TrainParams

    # Every name params accept builds a network, but the trees, which have no torch module (models/trees.py), and
    # segmentation's U-Net, which MONAI builds from its own config (imaging/network.py).
    assert {*BUILDERS, TREE_MODEL, "unet"} == set(TrainParams.model_fields["model"].annotation.__args__)
    assert build("tabular_mlp", n_in=5, n_classes=2, hidden=[8], dropout=0.0)(torch.randn(4, 5)).shape == (4, 2)
    with pytest.raises(KeyError, match="unknown model"):
        build("vgg", in_shape=[3, 32, 32], n_classes=10)
