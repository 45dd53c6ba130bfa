"""The multimodal LM: experts -> fusion -> projector -> visual tokens spliced into a Hugging
Face causal LM at the image placeholder, LLaVA style. Training returns the LM loss; generation
is batched greedy decoding from left-padded embeddings.

A model whose fusion has a pass before answering (Fusion.before_answer: MoVA's LLM router)
also holds that pass's adapter on the LLM (`router`, the name its parameters and trainable
group keep). Inside `in_pass()` the model is in that pass: the LLM sees the fusion's
`pass_tokens`, with the adapter on; outside it, the model answers with what the pass decided
handed in as `given` (MoVA: [B, E] experts; in training, those the routing labels name)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from models.experts.base import VisionExpert
from models.fusion.base import Fusion, TextContext
from models.splice import splice
from models.templates import IGNORE_INDEX, IMAGE_TOKEN_INDEX


class MultimodalLM(nn.Module):
    def __init__(self, experts: dict[str, VisionExpert], fusion: Fusion, projector: nn.Module,
                 llm: nn.Module, pad_token_id: int, max_length: int = 2048,
                 router: nn.Module | None = None):
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.fusion = fusion
        self.projector = projector
        self.llm = llm
        self.router = router
        self.pad_token_id = pad_token_id
        self.max_length = max_length
        self.is_in_pass = False

    @property
    def before_answer(self) -> str | None:
        """The id of the fusion's pass before answering; None: the model answers at once."""
        return self.fusion.before_answer

    @contextlib.contextmanager
    def in_pass(self):
        """The model in its fusion's pass before answering: the fusion's pass tokens, the
        pass's adapter on (`router`, from Fusion.pass_adapter; a pass without one uses the
        LLM as it is)."""
        if self.before_answer is None:
            raise RuntimeError(f"{type(self.fusion).__name__} has no pass before answering")
        before = self.is_in_pass
        self.is_in_pass = True
        try:
            with self.router.active() if self.router is not None else contextlib.nullcontext():
                yield
        finally:
            self.is_in_pass = before

    @property
    def num_visual_tokens(self) -> int:
        return self.fusion.output_tokens

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.clamp_min(0))

    def encode_images(self, pixels: dict[str, torch.Tensor],
                      text: TextContext | None = None) -> torch.Tensor:
        if self.is_in_pass:
            return self.projector(self.fusion.pass_tokens(self.experts, pixels))
        fused = self.fusion.encode(self.experts, pixels, text)
        return self.fusion.after_projector(self.projector(fused))

    def text_context(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor | None, sample_ids: list[str] | None = None,
                     given: torch.Tensor | None = None) -> TextContext:
        """The prompt as the LM embeds it, for gates that read the question: answer tokens
        (those with labels) and the image placeholder are masked out, so training never
        shows a gate the answer it is being trained to produce."""
        mask = attention_mask.bool() & (input_ids != IMAGE_TOKEN_INDEX)
        if labels is not None:
            mask &= labels == IGNORE_INDEX
        return TextContext(self.embed_text(input_ids), mask.to(attention_mask.dtype),
                           sample_ids, given)

    def _splice(self, input_ids: torch.Tensor, embeds: torch.Tensor,
                attention_mask: torch.Tensor, labels: torch.Tensor | None,
                visual: torch.Tensor | None, has_image: torch.Tensor, left_pad: bool,
                sample_ids: list[str] | None = None, visual_of: torch.Tensor | None = None):
        """Replace each sample's IMAGE_TOKEN_INDEX by its visual tokens; re-pad the batch
        (models.splice)."""
        return splice(input_ids, embeds, attention_mask, labels, visual, has_image, left_pad,
                      self.max_length, sample_ids, visual_of)

    def _visual(self, pixels: dict[str, torch.Tensor], has_image: torch.Tensor,
                text: TextContext) -> torch.Tensor | None:
        if not bool(has_image.any()):
            return None
        idx = has_image.nonzero().flatten()
        ids = [text.sample_ids[i] for i in idx.tolist()] if text.sample_ids else None
        # the gates see the prompt in the vision side's dtype: an LM held in bf16 beside an
        # fp32 fusion (the papers' setting) must not hand its bf16 embeddings to fp32 layers
        vision_dtype = self.projector_dtype
        given = text.given[idx] if text.given is not None else None
        text = TextContext(text.embeddings[idx].to(vision_dtype), text.mask[idx], ids, given)
        return self.encode_images({k: v[idx] for k, v in pixels.items()}, text)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def _lm_inputs(self, input_ids, attention_mask, labels, pixels, has_image, sample_ids,
                   left_pad: bool, given: torch.Tensor | None = None,
                   image_of: list[int] | None = None):
        """(embeddings, mask, labels) of the batch with the visual tokens spliced in. With
        `image_of`, rows share images: `pixels` and `has_image` hold one row per image and
        row i takes image image_of[i], encoded once with the prompt of the first row that
        takes it (likelihood scoring: a question's allowed answers share its image and
        prompt)."""
        text = self.text_context(input_ids, attention_mask, labels, sample_ids, given)
        if image_of is None:
            visual = self._visual(pixels, has_image, text)
            return self._splice(input_ids, text.embeddings, attention_mask, labels, visual,
                                has_image, left_pad, sample_ids)
        first: dict[int, int] = {}
        for i, k in enumerate(image_of):
            first.setdefault(k, i)
        if sorted(first) != list(range(has_image.shape[0])):
            raise ValueError(f"image_of {image_of} must name each of the batch's "
                             f"{has_image.shape[0]} images, from 0")
        rows = [first[k] for k in range(len(first))]
        at = torch.tensor(rows, device=input_ids.device)
        shared = TextContext(text.embeddings[at], text.mask[at],
                             [text.sample_ids[i] for i in rows] if text.sample_ids else None,
                             text.given[at] if text.given is not None else None)
        visual = self._visual(pixels, has_image, shared)
        of = torch.tensor(image_of, device=input_ids.device)
        per_row = has_image.to(input_ids.device)[of]
        nth = (has_image.long().cumsum(0) - 1).to(input_ids.device)[of]
        return self._splice(input_ids, text.embeddings, attention_mask, labels, visual,
                            per_row, left_pad, sample_ids, visual_of=nth)

    def forward(self, input_ids, attention_mask, labels, pixels, has_image, sample_ids=None,
                reduction: str = "mean"):
        """The LM loss on the answer tokens: their mean (`mean`), or their summed loss and
        their count (`sum`), which a loop divides by the count over the whole global batch so
        the gradient does not depend on how the batch was split over ranks and micro-steps."""
        embeds, mask, labels = self._lm_inputs(input_ids, attention_mask, labels, pixels,
                                               has_image, sample_ids, left_pad=False)
        if torch.is_grad_enabled() and not embeds.requires_grad and any(
                p.requires_grad for p in self.llm.parameters()):
            # A batch without images under a frozen embedding (LoRA adapters training inside
            # the LLM): the decoder layers' input must still carry gradient, or FSDP would
            # reduce their gradients in another order on this rank than on one with images
            embeds = embeds.detach().requires_grad_(True)
        if reduction == "mean":
            return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        counted = target != IGNORE_INDEX
        loss = torch.nn.functional.cross_entropy(logits[counted].float(), target[counted],
                                                 reduction="sum")
        # Every trainable part of the vision side takes part in the graph (with weight 0) even
        # in a batch without an image or one a router sends around an expert: data-parallel
        # and sharded ranks must all reduce the same gradients.
        anchor = [p.sum() for part in (self.experts, self.fusion, self.projector)
                  for p in part.parameters() if p.requires_grad]
        if anchor:
            loss = loss + 0.0 * torch.stack(anchor).sum().float()
        return loss, counted.sum()

    def answer_tokens(self, input_ids, attention_mask, labels, has_image) -> int:
        """How many answer tokens `forward` will count for this batch, without running it
        (the visual tokens spliced in, each sample cut at max_length, the first position not
        predicted): what a training step sums over its micro-batches before any forward."""
        total = 0
        for i in range(input_ids.shape[0]):
            keep = attention_mask[i].bool()
            ids, lab = input_ids[i][keep], labels[i][keep]
            pos = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
            if len(pos) == 1 and bool(has_image[i]):
                lab = _labels_around_image(lab, int(pos[0]), self.num_visual_tokens)
            total += int((lab[: self.max_length][1:] != IGNORE_INDEX).sum())
        return total

    def _answer_logits(self, input_ids, attention_mask, labels, pixels, has_image, sample_ids,
                       given=None, image_of: list[int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits [B, T-1, V] and their targets [B, T-1] (IGNORE_INDEX off the
        answer)."""
        embeds, mask, labels = self._lm_inputs(input_ids, attention_mask, labels, pixels,
                                               has_image, sample_ids, left_pad=False,
                                               given=given, image_of=image_of)
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask).logits[:, :-1]
        return logits, labels[:, 1:]

    @torch.no_grad()
    def per_sample_loss(self, input_ids, attention_mask, labels, pixels, has_image,
                        sample_ids=None, total: bool = False, given=None,
                        image_of: list[int] | None = None) -> torch.Tensor:
        """[B] mean next-token loss over each sample's answer tokens (routing labels compare
        models sample by sample); with total, the sum: the answer's negative log-likelihood.
        `image_of`: rows sharing images (_lm_inputs)."""
        logits, target = self._answer_logits(input_ids, attention_mask, labels, pixels,
                                             has_image, sample_ids, given, image_of)
        losses = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2).float(), target.clamp_min(0), reduction="none")
        counted = (target != IGNORE_INDEX).to(losses.dtype)
        summed = (losses * counted).sum(1)
        return summed if total else summed / counted.sum(1).clamp_min(1.0)

    @torch.no_grad()
    def answer_likelihood(self, input_ids, attention_mask, labels, pixels, has_image,
                          sample_ids=None, given=None) -> tuple[torch.Tensor, torch.Tensor]:
        """[B] total log-likelihood of each sample's answer tokens, and [B] whether greedy
        decoding from the prompt would produce exactly those tokens."""
        logits, target = self._answer_logits(input_ids, attention_mask, labels, pixels,
                                             has_image, sample_ids, given)
        logp = torch.log_softmax(logits.float(), dim=-1)
        counted = target != IGNORE_INDEX
        picked = logp.gather(2, target.clamp_min(0).unsqueeze(2)).squeeze(2)
        greedy = (logp.argmax(-1) == target) | ~counted
        return (picked * counted).sum(1), greedy.all(1)

    def _prompts(self, input_ids, attention_mask, pixels, has_image, sample_ids, given
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, mask) of generation prompts: left-padded, so that every row's next
        token is predicted at the last column and new tokens append to all rows alike."""
        embeds, mask, _ = self._lm_inputs(input_ids, attention_mask, None, pixels, has_image,
                                          sample_ids, left_pad=True, given=given)
        return embeds, mask

    @torch.no_grad()
    def next_token_logits(self, input_ids, attention_mask, pixels, has_image, sample_ids=None,
                          given=None) -> torch.Tensor:
        """[B, V] each prompt's logits for its first answer token, from the inputs `generate`
        starts from: how close a greedy answer is to a tie, and whether a row's logits depend
        on the rows batched with it."""
        embeds, mask = self._prompts(input_ids, attention_mask, pixels, has_image, sample_ids,
                                     given)
        # the position ids Hugging Face's generate derives from the mask: each row counts from
        # its first real token, not from the batch's first column
        positions = (mask.long().cumsum(1) - 1).clamp_min(0)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                        logits_to_keep=1).logits[:, -1]

    @torch.no_grad()
    def generate(self, input_ids, attention_mask, pixels, has_image, max_new_tokens: int,
                 stop_id: int, sample_ids=None, given=None) -> list[list[int]]:
        embeds, mask = self._prompts(input_ids, attention_mask, pixels, has_image, sample_ids,
                                     given)
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                max_new_tokens=max_new_tokens, eos_token_id=stop_id,
                                pad_token_id=self.pad_token_id, num_beams=1)
        results = []
        for row in out.tolist():
            results.append(row[: row.index(stop_id)] if stop_id in row else row)
        return results


def _labels_around_image(labels: torch.Tensor, at: int, visual_tokens: int) -> torch.Tensor:
    """A sample's labels with the image placeholder at `at` replaced by its visual tokens,
    which carry no label: what the splice feeds the LM and what `answer_tokens` counts."""
    return torch.cat([labels[:at], labels.new_full((visual_tokens,), IGNORE_INDEX),
                      labels[at + 1:]])
