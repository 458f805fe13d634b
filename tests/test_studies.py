"""Every study spec the project ships validates, and its model builds with the droppable blocks
its search space names."""
from pathlib import Path

import pytest
import torch

from search.spec import load_study_spec
from tadmodels.models import TADModel

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.yaml"))


def test_the_paper_studies_and_the_demo_are_there():
    assert {p.stem for p in STUDIES} >= {"demo", "thumos14_videomae_s", "anet_videomae_s", "thumos14_blvnet_tam"}


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_spec_validates_and_its_model_builds(path):
    spec = load_study_spec(path)
    with torch.device("meta"):  # shapes only: the paper-size models cost no memory here
        model = TADModel(spec.model)
    blocks = model.droppable_blocks()
    assert spec.search.max_drops < len(blocks)
    assert set(spec.search.blocks or blocks) <= set(blocks)
