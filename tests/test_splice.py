"""The splice of visual tokens into the LM's input (models.multimodal): an image without a
placeholder is an error naming the sample, not visual tokens silently dropped."""
from types import SimpleNamespace

import pytest
import torch

from models.multimodal import MultimodalLM
from models.templates import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def _batch(ids: list[list[int]], dim: int = 4):
    longest = max(len(r) for r in ids)
    input_ids = torch.zeros(len(ids), longest, dtype=torch.long)
    mask = torch.zeros(len(ids), longest, dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    embeds = torch.randn(len(ids), longest, dim)
    return input_ids, embeds, mask


def test_an_image_without_a_placeholder_is_an_error_naming_the_sample():
    input_ids, embeds, mask = _batch([[5, IMAGE_TOKEN_INDEX, 6], [5, 6, 7]])
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    visual = torch.randn(2, 3, 4)
    has_image = torch.tensor([True, True])
    with pytest.raises(ValueError, match=r"sample 1 .*no image placeholder"):
        MultimodalLM._splice(SimpleNamespace(max_length=64), input_ids, embeds, mask, labels,
                             visual, has_image, False)
