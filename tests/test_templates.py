"""Chat templates against hand-written official renders, and the encoder's ids and loss masks."""

import time
from types import SimpleNamespace

import pytest

from rlhfx.errors import RlhfxError
from rlhfx.templates.encoder import ChatEncoder
from rlhfx.templates.templates import TEMPLATES, get_template, render

CONVERSATION = [
    {"role": "system", "content": "You are a bot."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
]
L31_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
)
L32_SYSTEM = L31_SYSTEM.replace("26 Jul 2024", time.strftime("%d %b %Y"))

# name -> (full conversation, its trainable segments, one user turn "Hi" with the generation prompt)
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nYou are a bot.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n",
        ["Hello!<|im_end|>", "4<|im_end|>"],
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    "qwen2": (
        "<|im_start|>system\nYou are a bot.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n",
        ["Hello!<|im_end|>", "4<|im_end|>"],
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    "qwen2.5": (
        "<|im_start|>system\nYou are a bot.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n",
        ["Hello!<|im_end|>", "4<|im_end|>"],
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    "llama2": (
        "<s>[INST] <<SYS>>\nYou are a bot.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] What is 2+2? [/INST] 4 </s>",
        [" Hello! </s>", " 4 </s>"],
        "<s>[INST] Hi [/INST]",
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a bot.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
        ["Hello!<|eot_id|>", "4<|eot_id|>"],
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "llama3.1": (
        L31_SYSTEM + "You are a bot.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
        ["Hello!<|eot_id|>", "4<|eot_id|>"],
        L31_SYSTEM + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "llama3.2": (
        L32_SYSTEM + "You are a bot.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
        ["Hello!<|eot_id|>", "4<|eot_id|>"],
        L32_SYSTEM + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": (
        "<s> [INST] You are a bot.\n\nHi [/INST] Hello!</s> [INST] What is 2+2? [/INST] 4</s>",
        [" Hello!</s>", " 4</s>"],
        "<s> [INST] Hi [/INST]",
    ),
    "gemma": (
        "<bos><start_of_turn>user\nYou are a bot.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
        ["Hello!<end_of_turn>", "4<end_of_turn>"],
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    ),
    "phi3": (
        "<|system|>\nYou are a bot.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
        "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|>\n<|endoftext|>",
        ["Hello!<|end|>", "4<|end|>"],
        "<|user|>\nHi<|end|>\n<|assistant|>\n",
    ),
    "deepseek": (
        "<｜begin▁of▁sentence｜>You are a bot.\n\nUser: Hi\n\nAssistant: Hello!<｜end▁of▁sentence｜>"
        "User: What is 2+2?\n\nAssistant: 4<｜end▁of▁sentence｜>",
        [" Hello!<｜end▁of▁sentence｜>", " 4<｜end▁of▁sentence｜>"],
        "<｜begin▁of▁sentence｜>User: Hi\n\nAssistant:",
    ),
    "default": (
        "System: You are a bot.\nUser: Hi\nAssistant: Hello!</s>\nUser: What is 2+2?\nAssistant: 4</s>\n",
        [" Hello!</s>", " 4</s>"],
        "User: Hi\nAssistant:",
    ),
}


def test_every_template_has_an_expected_render():
    assert set(EXPECTED) == set(TEMPLATES)


@pytest.mark.parametrize("name", EXPECTED)
def test_render_conversation(name):
    full, trainable, _ = EXPECTED[name]
    segments = render(TEMPLATES[name], CONVERSATION, eos_token="</s>")
    assert "".join(s.text for s in segments) == full
    assert [s.text for s in segments if s.trainable] == trainable


@pytest.mark.parametrize("name", EXPECTED)
def test_render_generation_prompt(name):
    _, _, prompt = EXPECTED[name]
    segments = render(TEMPLATES[name], [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert "".join(s.text for s in segments) == prompt
    assert not any(s.trainable for s in segments)


def test_stripping_templates_trim_content():
    messages = [{"role": "user", "content": "  Hi \n"}, {"role": "assistant", "content": " Hello! "}]
    text = "".join(s.text for s in render(TEMPLATES["llama3"], messages))
    assert "\n\nHi<|eot_id|>" in text and "\n\nHello!<|eot_id|>" in text


def test_braces_in_content_are_kept_verbatim():
    messages = [{"role": "user", "content": "{content} {eos}"}, {"role": "assistant", "content": "{x}"}]
    text = "".join(s.text for s in render(TEMPLATES["default"], messages, eos_token="</s>"))
    assert text == "User: {content} {eos}\nAssistant: {x}</s>\n"


def test_default_template_needs_eos():
    with pytest.raises(RlhfxError, match="eos"):
        render(TEMPLATES["default"], CONVERSATION)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "s"}],
        [{"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "u"}, {"role": "user", "content": "u"}],
        [{"role": "user", "content": "u"}, {"role": "system", "content": "s"}],
        [{"role": "user", "content": "u"}, {"role": "bot", "content": "a"}],
        [{"role": "user"}],
    ],
)
def test_bad_conversations_raise(messages):
    with pytest.raises(RlhfxError):
        render(TEMPLATES["chatml"], messages)


def test_generation_prompt_needs_a_final_user_turn():
    with pytest.raises(RlhfxError, match="user"):
        render(TEMPLATES["chatml"], CONVERSATION, add_generation_prompt=True)


def test_get_template_suggests_a_name():
    assert get_template("llama3") is TEMPLATES["llama3"]
    with pytest.raises(RlhfxError, match="Did you mean 'llama3'"):
        get_template("lama3")


# --- encoder -------------------------------------------------------------------------------------


def _tokens(tokenizer, ids, mask):
    return tokenizer.decode([i for i, m in zip(ids, mask) if m])


def test_sft_mask_covers_answers_and_end_tokens(chatml_tokenizer):
    out = ChatEncoder(chatml_tokenizer, TEMPLATES["chatml"]).encode_sft(CONVERSATION)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    assert chatml_tokenizer.decode(ids) == EXPECTED["chatml"][0]
    assert _tokens(chatml_tokenizer, ids, mask) == "Hello!<|im_end|>4<|im_end|>"
    # each trained run is exactly one answer followed by <|im_end|>
    im_end = chatml_tokenizer.convert_tokens_to_ids("<|im_end|>")
    runs_end = [i for i in range(len(mask)) if mask[i] and (i + 1 == len(mask) or not mask[i + 1])]
    assert [ids[i] for i in runs_end] == [im_end, im_end]


def test_sft_train_on_last(chatml_tokenizer):
    out = ChatEncoder(chatml_tokenizer, TEMPLATES["chatml"], train_on="last").encode_sft(CONVERSATION)
    assert _tokens(chatml_tokenizer, out["input_ids"], out["assistant_masks"]) == "4<|im_end|>"


@pytest.mark.parametrize("template", [TEMPLATES["chatml"], None])
def test_prompt_plus_completion_is_a_prefix_of_sft(chatml_tokenizer, template):
    encoder = ChatEncoder(chatml_tokenizer, template)
    prompt_messages = CONVERSATION[:-1]
    prompt = encoder.encode_prompt(prompt_messages)
    completion = encoder.encode_completion(prompt_messages, "4")
    full = encoder.encode_sft(CONVERSATION)["input_ids"]
    assert full[: len(prompt) + len(completion)] == prompt + completion
    assert chatml_tokenizer.decode(completion) == "4<|im_end|>"
    assert encoder.prompt_text(prompt_messages) == chatml_tokenizer.decode(prompt)
    assert encoder.prompt_text(prompt_messages).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("train_on", ["all", "last"])
def test_tokenizer_chat_template_matches_chatml(chatml_tokenizer, train_on):
    ours = ChatEncoder(chatml_tokenizer, TEMPLATES["chatml"], train_on=train_on).encode_sft(CONVERSATION)
    theirs = ChatEncoder(chatml_tokenizer, None, train_on=train_on).encode_sft(CONVERSATION)
    assert ours == theirs


def test_tokenizer_without_chat_template():
    with pytest.raises(RlhfxError, match="no chat_template"):
        ChatEncoder(SimpleNamespace(chat_template=None), None)


@pytest.mark.parametrize("template", [TEMPLATES["chatml"], None])
def test_encoder_rejects_bad_role_order(chatml_tokenizer, template):
    encoder = ChatEncoder(chatml_tokenizer, template)
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(RlhfxError, match="role order"):
        encoder.encode_sft(bad)
    with pytest.raises(RlhfxError):
        encoder.encode_prompt(CONVERSATION)  # ends with an assistant turn
    with pytest.raises(RlhfxError):
        encoder.encode_completion(CONVERSATION, "5")


def test_unknown_train_on(chatml_tokenizer):
    with pytest.raises(RlhfxError, match="train_on"):
        ChatEncoder(chatml_tokenizer, TEMPLATES["chatml"], train_on="first")


def test_raw_prompt_from_input_template_bypasses_the_chat_template(chatml_tokenizer):
    from rlhfx.templates.encoder import ChatEncoder
    from rlhfx.templates.templates import get_template

    encoder = ChatEncoder(chatml_tokenizer, get_template("chatml"))
    prompt = [{"role": "user", "content": "User: Hi\nAssistant: ", "raw": True}]
    assert encoder.prompt_text(prompt) == "User: Hi\nAssistant: "
    completion = encoder.encode_completion(prompt, "Hello!")
    assert chatml_tokenizer.decode(completion) == "Hello!" + chatml_tokenizer.eos_token
    sft = encoder.encode_sft([*prompt, {"role": "assistant", "content": "Hello!"}])
    assert sft["input_ids"] == encoder.encode_prompt(prompt) + completion
    assert sft["assistant_masks"] == [0] * len(encoder.encode_prompt(prompt)) + [1] * len(completion)


# --- published chat templates: rlhfx's tokens are apply_chat_template's ---------------------------

SINGLE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
SYSTEM = [{"role": "system", "content": "You are a bot."}]
CONVERSATIONS = {"single": SINGLE, "multi": CONVERSATION[1:], "single+system": SYSTEM + SINGLE,
                 "multi+system": CONVERSATION}


@pytest.fixture(scope="module")
def family_tokenizers():
    from conftest import make_tokenizer
    from published_templates import FAMILIES

    return {name: make_tokenizer(f.special_tokens, f.chat_template, f.eos, f.bos) for name, f in FAMILIES.items()}


def _runs(tokenizer, ids, mask):
    """The decoded text of each contiguous run of trained tokens."""
    runs, current = [], []
    for token, m in zip([*ids, None], [*mask, 0]):
        if m:
            current.append(token)
        elif current:
            runs, current = runs + [tokenizer.decode(current)], []
    return runs


def _official(tokenizer, messages, **kwargs):
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def test_every_published_template_is_a_registry_template():
    from published_templates import FAMILIES

    assert set(FAMILIES) <= set(TEMPLATES)
    assert set(TEMPLATES) - set(FAMILIES) == {"default"}  # rlhfx's own format for base models


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", sorted(__import__("published_templates").FAMILIES))
def test_registry_template_trains_on_the_published_templates_tokens(family_tokenizers, name, conversation):
    from published_templates import FAMILIES

    tokenizer, messages = family_tokenizers[name], CONVERSATIONS[conversation]
    if "system" in conversation and not FAMILIES[name].system:  # rlhfx merges it into the first user turn instead
        with pytest.raises(Exception, match="(?i)system"):
            _official(tokenizer, messages)
        return
    out = ChatEncoder(tokenizer, TEMPLATES[name]).encode_sft(messages)
    assert out["input_ids"] == _official(tokenizer, messages)
    # the mask: one run per assistant turn, its answer and the end-of-turn token(s) the family closes it with
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    runs = _runs(tokenizer, out["input_ids"], out["assistant_masks"])
    eot = {"llama2": " </s>", "mistral": "</s>", "deepseek": "<｜end▁of▁sentence｜>"}.get(name)
    ends = {"chatml": "<|im_end|>", "qwen2": "<|im_end|>", "qwen2.5": "<|im_end|>", "gemma": "<end_of_turn>",
            "phi3": "<|end|>"}.get(name, eot or "<|eot_id|>")
    lead = " " if name in ("llama2", "mistral", "deepseek") else ""
    assert runs == [lead + answer + ends for answer in answers]
    # the tokenizer's own template, masked by prefix rendering, gives the same ids and mask
    assert ChatEncoder(tokenizer, None).encode_sft(messages) == out
    prompt = messages[:-1]
    assert ChatEncoder(tokenizer, TEMPLATES[name]).encode_prompt(prompt) == _official(
        tokenizer, prompt, add_generation_prompt=True)


def test_prefix_rendering_mask_without_generation_markers(family_tokenizers):
    """SmolLM2's template (no markers, its own default system prompt): ids as apply_chat_template, the mask on the
    answers and <|im_end|>, the default system prompt in the prompt."""
    from conftest import make_tokenizer
    from published_templates import SMOLLM2

    tokenizer = make_tokenizer(["<|im_start|>", "<|im_end|>"], SMOLLM2, "<|im_end|>")
    encoder = ChatEncoder(tokenizer, None)
    out = encoder.encode_sft(CONVERSATION[1:])
    assert out["input_ids"] == _official(tokenizer, CONVERSATION[1:])
    assert _runs(tokenizer, out["input_ids"], out["assistant_masks"]) == ["Hello!<|im_end|>", "4<|im_end|>"]
    assert encoder.prompt_text(SINGLE[:1]).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    completion = encoder.encode_completion(SINGLE[:1], "Hello!")
    assert tokenizer.decode(completion) == "Hello!<|im_end|>"
    last = ChatEncoder(tokenizer, None, train_on="last").encode_sft(CONVERSATION[1:])
    assert _runs(tokenizer, last["input_ids"], last["assistant_masks"]) == ["4<|im_end|>"]


def test_template_that_rewrites_earlier_turns_is_refused():
    from conftest import make_tokenizer

    # renders every turn differently when it is the last one, as some reasoning templates do
    template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if loop.last %}!{% endif %}"
                "{{ '\n' }}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    tokenizer = make_tokenizer(["<|end|>"], template, "<|end|>")
    with pytest.raises(RlhfxError, match="differently once more messages follow"):
        ChatEncoder(tokenizer, None).encode_sft(SINGLE)
