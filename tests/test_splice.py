"""The splice of visual tokens into the LM's input (models.multimodal): an image without a
placeholder is an error naming the sample, not visual tokens silently dropped."""
from types import SimpleNamespace

import pytest
import torch

from models.multimodal import MultimodalLM
from models.splice import splice
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


def reference_splice(input_ids, embeds, attention_mask, labels, visual, has_image, left_pad,
                     max_length):
    """The splice as it was written before (a loop over samples), kept as the definition the
    batched one must reproduce exactly."""
    seqs, labs = [], []
    v = 0
    for i in range(input_ids.shape[0]):
        keep = attention_mask[i].bool()
        ids, emb = input_ids[i][keep], embeds[i][keep]
        lab = labels[i][keep] if labels is not None else None
        pos = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
        if len(pos) == 1 and bool(has_image[i]):
            p = int(pos[0])
            emb = torch.cat([emb[:p], visual[v], emb[p + 1:]])
            if lab is not None:
                lab = torch.cat([lab[:p], lab.new_full((visual.shape[1],), IGNORE_INDEX),
                                 lab[p + 1:]])
            v += 1
        seqs.append(emb[:max_length])
        labs.append(lab[:max_length] if lab is not None else None)
    longest = max(s.shape[0] for s in seqs)
    b, d = len(seqs), embeds.shape[-1]
    out = embeds.new_zeros(b, longest, d)
    mask = attention_mask.new_zeros(b, longest)
    out_labels = (torch.full((b, longest), IGNORE_INDEX, dtype=torch.long)
                  if labels is not None else None)
    for i, s in enumerate(seqs):
        n = s.shape[0]
        sl = slice(longest - n, longest) if left_pad else slice(0, n)
        out[i, sl] = s
        mask[i, sl] = 1
        if out_labels is not None:
            out_labels[i, sl] = labs[i]
    return out, mask, out_labels


def _random_batch(g: torch.Generator, b: int, t: int, dim: int, n_visual: int,
                  left_padded_input: bool, embed_dtype, visual_dtype):
    """Samples with and without images, the placeholder anywhere, padding (right, or left as
    a caller may hand in), labels on some tokens."""
    input_ids = torch.randint(0, 50, (b, t), generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    has_image = torch.rand(b, generator=g) < 0.6
    for i in range(b):
        n = int(torch.randint(1, t + 1, (1,), generator=g))
        span = slice(t - n, t) if left_padded_input else slice(0, n)
        mask[i, span] = 1
        if has_image[i]:
            input_ids[i, span.start + int(torch.randint(0, n, (1,), generator=g))] = \
                IMAGE_TOKEN_INDEX
    labels = torch.where(torch.rand(b, t, generator=g) < 0.5, input_ids, IGNORE_INDEX)
    labels[input_ids == IMAGE_TOKEN_INDEX] = IGNORE_INDEX
    embeds = torch.randn(b, t, dim, generator=g).to(embed_dtype)
    count = int(has_image.sum())
    visual = torch.randn(count, n_visual, dim, generator=g).to(visual_dtype) if count else None
    return input_ids, embeds, mask, labels, visual, has_image


@pytest.mark.parametrize("left_pad", [False, True])
@pytest.mark.parametrize("with_labels", [False, True])
def test_batched_splice_equals_the_per_sample_loop(left_pad, with_labels):
    g = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(40):
        max_length = [64, 9, 5][trial % 3]          # some samples cut inside their image
        dtypes = [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                  (torch.float32, torch.bfloat16)][trial % 3]
        ids, emb, mask, labels, visual, has = _random_batch(
            g, b=1 + trial % 5, t=3 + trial % 7, dim=6, n_visual=1 + trial % 4,
            left_padded_input=trial % 4 == 3, embed_dtype=dtypes[0], visual_dtype=dtypes[1])
        labels = labels if with_labels else None
        want = reference_splice(ids, emb, mask, labels, visual, has, left_pad, max_length)
        got = splice(ids, emb, mask, labels, visual, has, left_pad, max_length)
        for w, o in zip(want, got):
            if w is None:
                assert o is None
                continue
            assert o.dtype == w.dtype and o.shape == w.shape
            assert torch.equal(o, w), f"trial {trial}"
        cases += 1
    assert cases == 40


def test_batched_splice_carries_the_gradient_of_text_and_visual_tokens():
    g = torch.Generator().manual_seed(1)
    ids, emb, mask, labels, visual, has = _random_batch(g, 4, 8, 5, 3, False,
                                                        torch.float32, torch.float32)
    grads = []
    for fn in (reference_splice, splice):
        e, v = emb.clone().requires_grad_(True), visual.clone().requires_grad_(True)
        out, _, _ = fn(ids, e, mask, labels, v, has, False, 64)
        (out * torch.arange(out.numel()).view_as(out)).sum().backward()
        grads.append((e.grad, v.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def _host_reads(fn, *args) -> int:
    """How many times `fn` reads a tensor's values back to Python (each a stall on a GPU)."""
    reads = []
    names = ("tolist", "item", "__bool__", "__int__", "__float__", "nonzero")
    originals = {n: getattr(torch.Tensor, n) for n in names}

    def counting(name):
        def read(self, *a, **k):
            reads.append(name)
            return originals[name](self, *a, **k)
        return read

    for n in names:
        setattr(torch.Tensor, n, counting(n))
    try:
        fn(*args)
    finally:
        for n, f in originals.items():
            setattr(torch.Tensor, n, f)
    return len(reads)


def test_the_batched_splice_reads_the_device_once_per_batch():
    g = torch.Generator().manual_seed(2)
    args = _random_batch(g, 8, 10, 4, 3, False, torch.float32, torch.float32)
    assert _host_reads(splice, *args, False, 64) == 1
    assert _host_reads(reference_splice, *args, False, 64) > 8   # the loop: several a sample
