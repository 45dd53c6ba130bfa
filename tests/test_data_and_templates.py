"""LLaVA-format loading (and its errors), the synthetic generator, templates' label masking,
and the tiny LM saved in Hugging Face format and loaded back through from_pretrained."""
import json

import pytest
import torch

from core.errors import DataError
from harness.config.run_config import SyntheticData
from harness.data.llava import load_llava_json
from harness.data.synthetic import SKILLS, corpus, ensure_synthetic, generate
from models.llm import LLMConfig, load_llm
from models.templates import IGNORE_INDEX, IMAGE_TOKEN_INDEX, TEMPLATES, template_corpus

SMALL = SyntheticData(train_per_skill=6, eval_per_skill=3, captions=5, text_only=4)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    llm = load_llm(LLMConfig(), tmp_path_factory.mktemp("llm"), corpus(SMALL) + template_corpus())
    return llm.tokenizer


def _write(tmp_path, records, images=()):
    (tmp_path / "img").mkdir(exist_ok=True)
    for name in images:
        (tmp_path / "img" / name).write_bytes(b"")
    (tmp_path / "d.json").write_text(json.dumps(records))
    return tmp_path / "d.json", tmp_path / "img"


def test_llava_records_multiturn_text_only_and_placeholder_anywhere(tmp_path):
    records = [
        {"id": "a", "image": "a.png", "conversations": [
            {"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "x"},
            {"from": "human", "value": "And now?"}, {"from": "gpt", "value": "y"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "2+2?"},
                                      {"from": "gpt", "value": "4"}]},
        {"id": "c", "image": "a.png", "conversations": [  # no placeholder: LLaVA prepends it
            {"from": "human", "value": "Describe."}, {"from": "gpt", "value": "z"}]},
    ]
    convs = load_llava_json(*_write(tmp_path, records, ["a.png"]))
    # LLaVA's preprocess_multimodal: the placeholder moves to the turn's front, then "\n"
    assert convs[0].turns == [("<image>\nWhat is this?", "x"), ("And now?", "y")]
    assert convs[1].image is None
    assert convs[2].turns[0][0] == "<image>\nDescribe."


@pytest.mark.parametrize("record,message", [
    ({"id": "m", "image": "missing.png", "conversations": [
        {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]},
     "image not found"),
    ({"id": "t", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
     "turn 1 \\(human\\) has no gpt reply"),
    ({"id": "r", "conversations": [{"from": "human", "value": "x"},
                                   {"from": "human", "value": "y"}]},
     "turn 1 is from 'human'"),
    ({"id": "s", "conversations": [{"from": "human", "value": "x"},
                                   {"from": "bot", "value": "y"}]},
     "turn 1 must be"),
    ({"id": "p", "conversations": [{"from": "human", "value": "<image> hi"},
                                   {"from": "gpt", "value": "x"}]},
     "no `image`"),
])
def test_bad_records_name_file_and_record(tmp_path, record, message):
    path, images = _write(tmp_path, [record])
    with pytest.raises(DataError, match=message) as err:
        load_llava_json(path, images)
    assert str(path) in str(err.value) and "record 0" in str(err.value)


def test_malformed_json_names_the_line(tmp_path):
    (tmp_path / "bad.json").write_text('[\n{"id": 1,\n')
    with pytest.raises(DataError, match=r"bad.json:\d+: malformed JSON"):
        load_llava_json(tmp_path / "bad.json", tmp_path)


def test_synthetic_is_deterministic_and_in_llava_format(tmp_path):
    generate(SMALL, tmp_path / "a")
    generate(SMALL, tmp_path / "b")
    for name in ("align", "sft", "eval"):
        assert (tmp_path / "a" / f"{name}.json").read_text() == \
               (tmp_path / "b" / f"{name}.json").read_text()
        records = load_llava_json(tmp_path / "a" / f"{name}.json", tmp_path / "a" / "images")
        assert records
    evals = load_llava_json(tmp_path / "a" / "eval.json", tmp_path / "a" / "images")
    assert {r.extra["benchmark"] for r in evals} == {s.benchmark for s in SKILLS.values()}
    sft = load_llava_json(tmp_path / "a" / "sft.json", tmp_path / "a" / "images")
    assert any(r.image is None for r in sft) and any(len(r.turns) > 1 for r in sft)
    # cached by content hash: a second call reuses the folder
    first = ensure_synthetic(SMALL, tmp_path / "cache")
    assert ensure_synthetic(SMALL, tmp_path / "cache") == first


def test_tiny_llm_is_a_real_hf_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    llm = load_llm(LLMConfig(), tmp_path, ["hello world"] + template_corpus())
    reloaded_tok = AutoTokenizer.from_pretrained(llm.source)
    reloaded = AutoModelForCausalLM.from_pretrained(llm.source)
    text = "USER: What color is it? ASSISTANT: red</s>"
    ids = reloaded_tok(text, add_special_tokens=False)["input_ids"]
    assert reloaded_tok.decode(ids) == text
    x = torch.tensor([ids])
    torch.testing.assert_close(llm.model(x).logits, reloaded(x).logits)


@pytest.mark.parametrize("name", ["plain", "vicuna_v1", "llama3"])
def test_templates_train_only_on_replies(tokenizer, name):
    template = TEMPLATES.get(name)
    turns = [("<image>\nWhat color is the shape?", "red"), ("What shape is it?", "circle")]
    enc = template.encode(turns, tokenizer)
    assert enc.input_ids.count(IMAGE_TOKEN_INDEX) == 1
    trained = [t for t, l in zip(enc.input_ids, enc.labels) if l != IGNORE_INDEX]
    text = tokenizer.decode(trained)
    assert "red" in text and "What color" not in text
    if name != "plain":  # plain keeps only the first reply (LLaVA's alignment format)
        assert "circle" in text and text.count(template.stop) == 2
    prompt = template.encode(turns[:1], tokenizer, for_generation=True)
    assert all(l == IGNORE_INDEX for l in prompt.labels)
    assert "red" not in tokenizer.decode([t for t in prompt.input_ids if t >= 0])
