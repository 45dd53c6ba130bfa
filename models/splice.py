"""The splice of visual tokens into the LM's input, LLaVA style: each sample's image
placeholder (IMAGE_TOKEN_INDEX) is replaced by its image's visual tokens, padding is dropped,
each sample is cut at the LM's max_length and the batch is padded again.

Computed for the whole batch at once: every output position gathers its row from one table
(text embeddings, visual tokens, a zero pad row), so the device works in a few kernels and
the host waits for it once per batch (the lengths that shape the output), not several times
per sample as a loop over samples with per-sample `nonzero` and `int()` reads did."""
from __future__ import annotations

import torch

from models.templates import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def splice(input_ids: torch.Tensor, embeds: torch.Tensor, attention_mask: torch.Tensor,
           labels: torch.Tensor | None, visual: torch.Tensor | None, has_image: torch.Tensor,
           left_pad: bool, max_length: int, sample_ids: list[str] | None = None,
           visual_of: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(embeddings [B, L, D], mask [B, L], labels [B, L] or None). `visual` holds the visual
    tokens [N, V, D] of the samples with has_image, in batch order, or, with `visual_of`
    ([B]: row i's index in `visual`), images that rows share; visual positions carry
    IGNORE_INDEX labels; pad positions are zeros, mask 0 and IGNORE_INDEX."""
    b, t = input_ids.shape
    device = input_ids.device
    keep = attention_mask.bool()
    image = has_image.to(device=device, dtype=torch.bool)
    placeholder = keep & (input_ids == IMAGE_TOKEN_INDEX)
    compact = keep.long().cumsum(1) - 1                  # a kept token's index among kept
    n_visual = visual.shape[1] if visual is not None else 0
    extra = (n_visual - 1) * image.long()
    lengths = (keep.sum(1) + extra).clamp_max(max_length)
    # the one host read: the output's shape and the checks
    counts, flags, sizes = torch.stack([placeholder.sum(1), image.long(), lengths]).tolist()
    _check(counts, flags, sample_ids)
    longest = max(sizes)

    at = torch.where(placeholder, compact, 0).sum(1)    # the placeholder's kept index
    # kept columns first, in order: row i's c-th kept token is in column kept_cols[i, c]
    kept_cols = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    pos = torch.arange(longest, device=device).expand(b, -1)
    offset = (longest - lengths).unsqueeze(1) if left_pad else torch.zeros_like(pos[:, :1])
    u = pos - offset                                     # index in the sample's own sequence
    valid = (u >= 0) & (u < lengths.unsqueeze(1))
    start = at.unsqueeze(1)
    on_image = image.unsqueeze(1) & (u >= start) & (u < start + n_visual)
    after = image.unsqueeze(1) & (u >= start + n_visual)
    text_at = torch.where(after, u - extra.unsqueeze(1), u).clamp(0, t - 1)
    text_row = torch.arange(b, device=device).unsqueeze(1) * t + kept_cols.gather(1, text_at)
    which_image = (image.long().cumsum(0) - 1 if visual_of is None
                   else visual_of.to(device)).clamp_min(0).unsqueeze(1)
    visual_row = b * t + which_image * n_visual + (u - start).clamp(0, max(n_visual - 1, 0))
    pad_row = b * t + (visual.shape[0] * n_visual if visual is not None else 0)
    index = torch.where(valid & on_image, visual_row,
                        torch.where(valid, text_row, pad_row))

    d = embeds.shape[-1]
    table = [embeds.reshape(b * t, d)]
    if visual is not None:
        table.append(visual.reshape(-1, d).to(embeds.dtype))
    table.append(embeds.new_zeros(1, d))
    out = torch.cat(table).index_select(0, index.flatten()).view(b, longest, d)
    mask = valid.to(attention_mask.dtype)
    if labels is None:
        return out, mask, None
    label_table = torch.cat([labels.reshape(-1).long(),
                             labels.new_full((pad_row - b * t + 1,), IGNORE_INDEX).long()])
    out_labels = label_table.index_select(0, index.flatten()).view(b, longest)
    return out, mask, out_labels


def _check(placeholders: list[int], images: list[int], sample_ids: list[str] | None) -> None:
    """One placeholder for a sample with an image, none for one without: anything else
    would drop visual tokens or leave a placeholder unfilled."""
    for i, (n, has) in enumerate(zip(placeholders, images)):
        name = f"sample {i}" + (f" ({sample_ids[i]})" if sample_ids else "")
        if n > 1:
            raise ValueError(f"{name} has {n} image placeholders; one is allowed")
        if n == 1 and not has:
            raise ValueError(f"{name} has an image placeholder but no image")
        if n == 0 and has:
            raise ValueError(f"{name} has an image but no image placeholder "
                             f"({IMAGE_TOKEN_INDEX}) in its input_ids: its visual tokens "
                             "would never reach the LM")
