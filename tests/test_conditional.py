"""Conditioning (**cond, e.g. class labels y) flows through the model, a training loss and sampling."""

from __future__ import annotations

import pytest
import torch

import ctcm

from conftest import stub_model

N_CLASSES = 4


def labelled_model() -> ctcm.ConsistencyModel:
    model = stub_model(n_classes=N_CLASSES)
    with torch.no_grad():  # distinct label embeddings, well away from zero
        model.backbone.labels.weight.copy_(torch.arange(N_CLASSES * 3, dtype=torch.float64).view(N_CLASSES, 3) / 4)
    return model


def test_labels_change_the_output():
    model = labelled_model()
    x, t = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    a, b = model(x, t, y=torch.tensor([0, 0])), model(x, t, y=torch.tensor([0, 3]))
    assert torch.equal(a[0], b[0]) and not torch.allclose(a[1], b[1])
    with pytest.raises(ValueError, match="unconditional stub backbone"):
        stub_model()(x, t, y=torch.tensor([0, 1]))


def test_labels_flow_through_the_time_derivative():
    model = labelled_model()
    x, dx = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t, y = torch.tensor([0.3, 0.8], dtype=torch.float64), torch.tensor([1, 2])
    expected = ctcm.total_derivative(lambda u, s: model(u, s, y=y), x, t, dx)
    d = model.time_derivative(x, t, dx, y=y)
    torch.testing.assert_close((d.f, d.df_dt()), expected)


@pytest.mark.parametrize("terms", [["consistency"], ["consistency", "tangent"]])
def test_labels_flow_through_a_training_loss(terms):
    model = labelled_model().train()
    objective = ctcm.WeightedSum([(1.0, ctcm.create_objective(name)) for name in terms])
    x0 = torch.rand(4, 3, 8, 8, dtype=torch.float64) * 2 - 1

    def loss(y: torch.Tensor) -> torch.Tensor:
        return objective(model, x0, generator=torch.Generator().manual_seed(0), cond={"y": y}).loss

    y = torch.tensor([0, 1, 2, 3])
    assert loss(y).item() != loss(torch.zeros(4, dtype=torch.long)).item()
    loss(y).backward()
    grad = model.backbone.labels.weight.grad
    assert grad is not None and (grad.abs().sum(1) > 0).all()  # every used label gets a gradient


def test_labels_flow_through_sampling_image_by_image():
    model = labelled_model().eval()
    y = torch.tensor([2, 0, 3, 1, 2])
    batched = model.sample(5, seed=1, steps=2, batch_size=2, cond={"y": y})
    one_by_one = model.sample(5, seed=1, steps=2, batch_size=1, cond={"y": y})
    assert torch.equal(batched, one_by_one)
    assert torch.equal(model.sample(5, steps=2, seed=1, cond={"y": y}), batched)
    other = model.sample(5, seed=1, steps=2, cond={"y": torch.zeros(5, dtype=torch.long)})
    assert torch.equal(other[1], batched[1]) and not torch.equal(other[0], batched[0])
    with pytest.raises(ValueError, match=r"cond\['y'\] has 4 rows for 5 images"):
        model.sample(5, cond={"y": y[:4]})
