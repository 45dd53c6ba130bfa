"""Conversation templates: how a LLaVA conversation becomes token ids and training labels.

`plain` is LLaVA's alignment format (image then caption, nothing else); `vicuna_v1` and
`llama3` are the fine-tuning formats of LLaVA-1.5 and Llama-3-based models. Only assistant
replies (and their end marker) carry labels. The `<image>` placeholder becomes
IMAGE_TOKEN_INDEX, which the multimodal LM replaces with the visual tokens."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.registry import Registry

IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's "
                 "questions.")
LLAMA3_SYSTEM = "You are a helpful language and vision assistant."

Segment = tuple[str, bool]  # (text, trained on)


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class Template:
    name: str
    render: Callable[[list[tuple[str, str]], bool], list[Segment]]
    stop: str  # the token that ends an assistant reply

    def encode(self, turns: list[tuple[str, str]], tokenizer, for_generation: bool = False
               ) -> Encoded:
        """turns: (human, assistant) pairs; for generation the last reply is left open.

        Tokenized as LLaVA's `tokenizer_image_token` does: the whole rendered conversation,
        split only at the image placeholders, each piece in one tokenizer call (so a
        sentencepiece tokenizer's word-initial marks and merges are what LLaVA-1.5 trains on,
        not an artefact of where a template segment ends). A token is trained when its
        characters lie in a trained segment (replies and their end marker)."""
        segments = self.render(turns, for_generation)
        text = "".join(t for t, _ in segments)
        trained, start = [], 0
        for seg, is_trained in segments:
            if is_trained:
                trained.append((start, start + len(seg)))
            start += len(seg)
        ids: list[int] = []
        labels: list[int] = []
        offset = 0
        for k, piece in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if k:
                ids.append(IMAGE_TOKEN_INDEX)
                labels.append(IGNORE_INDEX)
                offset += len(IMAGE_PLACEHOLDER)
            if piece:
                enc = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True)
                for tok, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
                    a, b = a + offset, max(b, a + 1) + offset
                    ids.append(tok)
                    labels.append(tok if any(lo <= a and b <= hi for lo, hi in trained)
                                  else IGNORE_INDEX)
            offset += len(piece)
        return Encoded(ids, labels)

    def stop_id(self, tokenizer) -> int:
        return tokenizer.convert_tokens_to_ids(self.stop)


TEMPLATES: Registry[Template] = Registry("template")


def _plain(turns, for_generation):
    # LLaVA's pretraining format (preprocess_plain) keeps only the image from the human turn;
    # its tokenizer call adds the BOS in front.
    segments: list[Segment] = [("<s>" + IMAGE_PLACEHOLDER, False)]
    if not for_generation:
        segments.append((turns[0][1] + "\n", True))
    return segments


def _vicuna(turns, for_generation):
    segments: list[Segment] = [("<s>" + VICUNA_SYSTEM + " ", False)]
    for i, (human, reply) in enumerate(turns):
        segments.append((f"USER: {human} ASSISTANT:", False))
        if for_generation and i == len(turns) - 1:
            break
        segments.append((f" {reply}</s>", True))
    return segments


def _llama3(turns, for_generation):
    segments: list[Segment] = [(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        f"{LLAMA3_SYSTEM}<|eot_id|>", False)]
    for i, (human, reply) in enumerate(turns):
        segments.append((f"<|start_header_id|>user<|end_header_id|>\n\n{human}<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n", False))
        if for_generation and i == len(turns) - 1:
            break
        segments.append((f"{reply}<|eot_id|>", True))
    return segments


for _t in (Template("plain", _plain, "\n"), Template("vicuna_v1", _vicuna, "</s>"),
           Template("llama3", _llama3, "<|eot_id|>")):
    TEMPLATES.register(_t.name, f"{_t.name} conversation format")(_t)


def template_corpus() -> list[str]:
    """Fixed strings of every template, so a locally trained tokenizer covers them."""
    sample = [("<image>\nWhat is it?", "a thing")]
    return ["".join(t for t, _ in r(sample, False)) for r in (_plain, _vicuna, _llama3)]
