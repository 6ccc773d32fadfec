"""MeanFlow in the engine: DDP on 2 gloo ranks with dropout equals one process (the JVP path's gradients are
synchronised), and a diverging tangent stops the run with its cause named."""

from __future__ import annotations

import pytest
import torch

from ctcm.engine import NonFiniteError, Trainer
from test_engine import ToyImages, assert_ddp_matches_one_process, small_config

MEANFLOW = ["model.schedule={name: linear}", "model.backbone.time_inputs=2", "model.backbone.dropout=0.2",
            "objective=[{name: meanflow}]"]


@pytest.mark.slow
def test_meanflow_ddp_two_ranks_with_dropout_match_one_process(tmp_path):
    assert_ddp_matches_one_process(tmp_path, ["steps=3", "data.num_workers=0", *MEANFLOW])


def test_a_diverging_meanflow_run_stops_naming_the_cause(tmp_path):
    cfg = small_config("steps=6", "max_nonfinite=2", *MEANFLOW)
    trainer = Trainer(cfg, tmp_path / "run", dataset=ToyImages(), progress=False)
    with torch.no_grad():  # an overflowed time embedding: every u is non-finite
        trainer.model.backbone.embed.mlp[0].weight.fill_(float("inf"))
    with pytest.raises(NonFiniteError, match=r"2 consecutive steps .* \(last: term 'meanflow': the network's output "
                                             r"u is non-finite for 8 of 8 samples"):
        trainer.run()
