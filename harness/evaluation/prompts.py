"""The answer instructions of LLaVA-1.5's evaluation (haotian-liu/LLaVA, scripts/v1_5/eval and
llava/eval/model_vqa_*.py): a short-answer suffix for open questions and yes/no benchmarks, an
option-letter suffix after the lettered options for multiple choice."""
from __future__ import annotations

SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJ"


def short_answer(question: str) -> str:
    """The question as its file has it (LLaVA's question files keep it unstripped, and a
    TextVQA prompt whose image has no OCR tokens ends in "token: "), then the instruction."""
    return f"{question}\n{SHORT_ANSWER}"


def with_ocr_tokens(question: str, tokens: list[str]) -> str:
    """TextVQA as LLaVA-1.5's llava_textvqa_val_v051_ocr.jsonl asks it (its eval_textvqa.py
    reads this three-line layout back): the question, then the image's OCR tokens."""
    return f"{question.strip()}\nReference OCR token: {', '.join(tokens)}"


def multiple_choice(question: str, options: list[str], hint: str | None = None) -> str:
    """LLaVA's layout (model_vqa_mmbench.py:85-99; llava_test_CQM-A.json and SEED's file have
    the same): the hint first when there is one, then the question, one 'A. option' line per
    option, then the letter instruction; texts as their files have them."""
    lines = [hint] if hint is not None else []
    lines.append(question)
    lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    lines.append(OPTION_LETTER)
    return "\n".join(lines)
