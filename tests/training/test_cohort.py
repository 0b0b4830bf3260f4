"""The surv_head cohort refit: its checkpoint's manifest is the one every stage writes."""

from __future__ import annotations

from pathlib import Path

import torch

from tumorscope.config import load_config
from tumorscope.models.registry import create_model
from tumorscope.runs import read_run_manifest
from tumorscope.training.cohort import cohort_readouts, refit_survival_head
from tumorscope.training.collective import DistContext
from tumorscope.training.data import StageData

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_refit_records_the_world_size_and_patients(synth_brain: Path, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "tiny.yaml")
    data = StageData.build(data=[synth_brain], cfg=cfg, cache=tmp_path / "cache")
    torch.manual_seed(0)
    model = create_model(cfg.model)
    stage = next(s for s in cfg.stages if s.cohort_refit)
    cohort = cohort_readouts(model, data.train_survival_batches(), "fp32")
    train_ids = set(data.split_patients()["train"])
    assert len(cohort) > 0 and set(cohort.patient_ids) <= train_ids
    # Every patient's slices are contiguous under its own index, in first-seen order.
    assert cohort.patient_index.tolist() == sorted(cohort.patient_index.tolist())
    assert int(cohort.patient_index.max()) + 1 == len(cohort.patient_ids)
    # The cache holds the readout the survival head embeds, so the refit trains the embedding.
    head = model.survival_head
    assert head is not None
    assert cohort.embedding.shape[1] == head.embedding[2].in_features
    before = head.embedding[2].weight.detach().clone()
    out = tmp_path / "stage"
    # Rank 0 of 2: the refit is full-batch and deterministic, so it needs no collective.
    info = refit_survival_head(
        cfg, stage, model, data, out, "fp32", None, ctx=DistContext(rank=0, world=2)
    )
    assert info["steps"] == stage.max_steps and info["cohort_refit"] is True
    assert not torch.equal(before, head.embedding[2].weight)
    manifest = read_run_manifest(out)
    assert manifest.world_size == 2 and manifest.stage == stage.name
    assert manifest.step == info["best_step"]
    assert manifest.preprocessing == data.spec_dict()
