"""Format detection and normalisation: each source layout -> canonical rows, written out by hand."""

import json

import pytest

from rlhfx.data import DataConfig, DropReport, load_data
from rlhfx.errors import RlhfxError


def load(tmp_path, rows, kind, **options):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train, _, report = load_data(DataConfig([str(path)], kind, **options))
    return train, report


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def test_openai_messages_to_sft(tmp_path):
    rows = [{"messages": [system("Be brief."), user("Hi"), assistant("Hello"), user("Bye"), assistant("Ciao")]}]
    train, report = load(tmp_path, rows, "sft")
    assert train == rows
    assert report.total_dropped == 0


def test_sharegpt_to_sft(tmp_path):
    rows = [
        {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                           {"from": "gpt", "value": "A"}]},
        {"conversations": [{"from": "user", "value": "Q2"}, {"from": "assistant", "value": "A2"}]},
    ]
    train, _ = load(tmp_path, rows, "sft")
    assert train == [
        {"messages": [system("S"), user("Q"), assistant("A")]},
        {"messages": [user("Q2"), assistant("A2")]},
    ]


def test_alpaca_to_sft(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "chat", "output": "cat"},
        {"instruction": "Say hi", "input": "", "output": "hi", "system": "Be nice."},
    ]
    train, _ = load(tmp_path, rows, "sft")
    assert train == [
        {"messages": [user("Translate\nchat"), assistant("cat")]},
        {"messages": [system("Be nice."), user("Say hi"), assistant("hi")]},
    ]


def test_swift_query_response_history_to_sft(tmp_path):
    rows = [{"system": "S", "query": "Q2", "response": "R2", "history": [["Q1", "R1"]]}]
    train, _ = load(tmp_path, rows, "sft")
    assert train == [{"messages": [system("S"), user("Q1"), assistant("R1"), user("Q2"), assistant("R2")]}]


def test_swift_rejected_response_to_pairwise(tmp_path):
    expected = [{"prompt": [user("Q")], "chosen": "good", "rejected": "bad"}]
    rows = [{"query": "Q", "response": "good", "rejected_response": "bad"}]
    assert load(tmp_path, rows, "pairwise")[0] == expected
    rows = [{"messages": [user("Q"), assistant("good")], "rejected_response": "bad"}]
    assert load(tmp_path, rows, "pairwise")[0] == expected


def test_trl_preference_strings_to_pairwise_with_margin(tmp_path):
    rows = [{"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 2}]
    train, _ = load(tmp_path, rows, "pairwise")
    assert train == [{"prompt": [user("Q")], "chosen": "good", "rejected": "bad", "margin": 2.0}]


def test_trl_preference_message_lists_to_pairwise(tmp_path):
    rows = [
        {"prompt": [user("Q")], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
        # UltraFeedback: a string prompt, and chosen/rejected repeating it as whole conversations.
        {"prompt": "Q", "chosen": [user("Q"), assistant("good")], "rejected": [user("Q"), assistant("bad")]},
    ]
    train, _ = load(tmp_path, rows, "pairwise")
    assert train == [{"prompt": [user("Q")], "chosen": "good", "rejected": "bad"}] * 2


def test_openrlhf_whole_conversations_to_pairwise(tmp_path):
    turns = [user("Q1"), assistant("A1"), user("Q2")]
    rows = [
        {"chosen": turns + [assistant("good")], "rejected": turns + [assistant("bad")]},
        {"chosen": [user("X"), assistant("good")], "rejected": [user("Y"), assistant("bad")]},
    ]
    train, report = load(tmp_path, rows, "pairwise")
    assert train == [{"prompt": turns, "chosen": "good", "rejected": "bad"}]
    assert report.counts() == {"prompt mismatch": 1}


def test_hh_rlhf_transcripts_to_pairwise(tmp_path):
    rows = [{
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: Knock knock.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant: No.",
    }]
    train, _ = load(tmp_path, rows, "pairwise")
    prompt = [user("Hi"), assistant("Hello"), user("Joke?")]
    assert train == [{"prompt": prompt, "chosen": "Knock knock.", "rejected": "No."}]


def test_hh_rlhf_prompt_column_is_parsed_into_turns(tmp_path):
    """Dahoas/rm-static style: the prompt is the transcript up to "\n\nAssistant:", the answers follow its colon."""
    rows = [{"prompt": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Joke?\n\nAssistant:",
             "chosen": " Knock knock.", "rejected": " No."},
            {"prompt": "Plain question\n\nAssistant: is not a transcript", "chosen": " a", "rejected": "b"}]
    train, _ = load(tmp_path, rows, "pairwise")
    assert train[0] == {"prompt": [user("Hi"), assistant("Hello"), user("Joke?")], "chosen": "Knock knock.",
                        "rejected": "No."}
    assert train[1] == {"prompt": [user("Plain question\n\nAssistant: is not a transcript")], "chosen": " a",
                        "rejected": "b"}
    sft, _ = load(tmp_path, [{"prompt": "\n\nHuman: Hi\n\nAssistant:", "response": " Hello"}], "sft")
    assert sft == [{"messages": [user("Hi"), assistant("Hello")]}]


def test_kto_label_variants(tmp_path):
    rows = [
        {"prompt": "Q", "completion": "a", "label": True},
        {"prompt": "Q", "completion": "b", "label": 0},
        {"prompt": "Q", "completion": "c", "label": "true"},
        {"prompt": "Q", "completion": "d", "label": "False"},
        {"prompt": "Q", "completion": "e", "label": "yes"},
        {"prompt": "Q", "completion": "f", "label": [1]},
    ]
    train, report = load(tmp_path, rows, "unpaired")
    assert train == [
        {"prompt": [user("Q")], "completion": "a", "label": True},
        {"prompt": [user("Q")], "completion": "b", "label": False},
        {"prompt": [user("Q")], "completion": "c", "label": True},
        {"prompt": [user("Q")], "completion": "d", "label": False},
    ]
    assert report.counts() == {"wrong type": 2}


def test_ultrafeedback_style_scores_for_kto(tmp_path):
    """instruction/response/score rows: with --response_key response --label_key score they load as unpaired rows;
    a numeric score needs --desirable_threshold (score >= threshold is desirable), else a clear error."""
    rows = [{"instruction": "Q1", "response": "A1", "score": 8}, {"instruction": "Q2", "response": "A2", "score": 2.5},
            {"instruction": "Q3", "response": "A3", "score": 7}]
    keys = dict(response_key="response", label_key="score")
    with pytest.raises(RlhfxError, match="desirable_threshold") as error:
        load(tmp_path, rows, "unpaired", **keys)
    assert "'score'" in str(error.value) and "8" in str(error.value)
    train, report = load(tmp_path, rows, "unpaired", desirable_threshold=7, **keys)
    assert train == [{"prompt": [user("Q1")], "completion": "A1", "label": True},
                     {"prompt": [user("Q2")], "completion": "A2", "label": False},
                     {"prompt": [user("Q3")], "completion": "A3", "label": True}]
    assert report.counts() == {}
    assert load(tmp_path, rows, "sft", response_key="response")[0][0] == {"messages": [user("Q1"), assistant("A1")]}


def test_kto_message_lists_and_swift_messages_label(tmp_path):
    rows = [{"prompt": [user("Q")], "completion": [assistant("A")], "label": True}]
    assert load(tmp_path, rows, "unpaired")[0] == [{"prompt": [user("Q")], "completion": "A", "label": True}]
    rows = [{"messages": [user("Q"), assistant("A")], "label": 0}]
    assert load(tmp_path, rows, "unpaired")[0] == [{"prompt": [user("Q")], "completion": "A", "label": False}]


def test_paired_source_as_unpaired_gives_two_rows(tmp_path):
    rows = [{"prompt": "Q", "chosen": "good", "rejected": "bad"}]
    train, report = load(tmp_path, rows, "unpaired")
    assert train == [
        {"prompt": [user("Q")], "completion": "good", "label": True},
        {"prompt": [user("Q")], "completion": "bad", "label": False},
    ]
    assert report.kept_count(str(tmp_path / "data.jsonl")) == 1


def test_preference_as_sft_uses_chosen(tmp_path):
    rows = [{"prompt": "Q", "chosen": "good", "rejected": "bad"}]
    assert load(tmp_path, rows, "sft")[0] == [{"messages": [user("Q"), assistant("good")]}]


def test_prompt_only_layouts(tmp_path):
    cases = [
        ({"prompt": "Q", "answer": "42"}, [user("Q")], "42"),
        ({"prompt": [system("S"), user("Q")], "solution": 7}, [system("S"), user("Q")], "7"),
        ({"messages": [user("Q"), assistant("ignored")], "label": "x"}, [user("Q")], "x"),
        ({"query": "Q", "response": "ignored"}, [user("Q")], None),
        ({"instruction": "Q", "input": "more", "output": "ignored"}, [user("Q\nmore")], None),
    ]
    for row, prompt, label in cases:
        assert load(tmp_path, [row], "prompt")[0] == [{"prompt": prompt, "label": label}]


def test_key_flags_override_detection(tmp_path):
    rows = [{"question": "Q", "good": "g", "bad": "b", "ans": "a", "score": 1}]
    train, _ = load(tmp_path, rows, "pairwise", prompt_key="question", chosen_key="good", rejected_key="bad")
    assert train == [{"prompt": [user("Q")], "chosen": "g", "rejected": "b"}]
    train, _ = load(tmp_path, rows, "sft", prompt_key="question", response_key="ans")
    assert train == [{"messages": [user("Q"), assistant("a")]}]
    train, _ = load(tmp_path, rows, "unpaired", prompt_key="question", response_key="ans", label_key="score")
    assert train == [{"prompt": [user("Q")], "completion": "a", "label": True}]
    train, _ = load(tmp_path, rows, "prompt", prompt_key="question", label_key="ans")
    assert train == [{"prompt": [user("Q")], "label": "a"}]
    rows = [{"dialog": [user("Q"), assistant("A")], "prompt": "not this"}]
    train, _ = load(tmp_path, rows, "sft", messages_key="dialog")
    assert train == [{"messages": [user("Q"), assistant("A")]}]


def test_columns_json_renames_before_detection(tmp_path):
    rows = [{"q": "Q", "gold": "42", "out": "A"}]
    train, _ = load(tmp_path, rows, "prompt", columns='{"q": "query", "gold": "solution"}')
    assert train == [{"prompt": [user("Q")], "label": "42"}]
    train, _ = load(tmp_path, rows, "sft", columns='{"q": "query", "out": "response"}')
    assert train == [{"messages": [user("Q"), assistant("A")]}]
    # a key flag wins over --columns for the same column
    train, _ = load(tmp_path, rows, "sft", columns='{"q": "query", "out": "response"}', response_key="gold")
    assert train == [{"messages": [user("Q"), assistant("42")]}]


@pytest.mark.parametrize("columns, message", [
    ('{"q": "query"', "is not a JSON object"),
    ('["q", "query"]', "is not a JSON object"),
    ('{"q": 1}', "is not a JSON object"),
    ('{"q": "query", "answer": "solution"}', "renames answer, but .*data.jsonl has no such column .*gold, out, q"),
])
def test_bad_columns_are_refused(tmp_path, columns, message):
    with pytest.raises(RlhfxError, match=message):
        load(tmp_path, [{"q": "Q", "gold": "42", "out": "A"}], "prompt", columns=columns)


def test_default_system_is_added_only_where_missing(tmp_path):
    rows = [{"messages": [user("Q"), assistant("A")]}, {"messages": [system("Own"), user("Q"), assistant("A")]}]
    train, _ = load(tmp_path, rows, "sft", system="Default")
    assert train == [
        {"messages": [system("Default"), user("Q"), assistant("A")]},
        {"messages": [system("Own"), user("Q"), assistant("A")]},
    ]


def test_rows_of_another_layout_than_the_first_are_dropped(tmp_path):
    rows = [{"prompt": "Q", "response": "A"}, {"messages": [user("Q"), assistant("A")]}]
    train, report = load(tmp_path, rows, "sft")
    assert train == [{"messages": [user("Q"), assistant("A")]}]
    assert report.counts() == {"missing key": 1}


def test_input_template_gives_one_raw_user_message(tmp_path):
    prompts = ["Q", [system("S"), user("Q")], [user("Q1"), assistant("A1"), user("Q2")]]
    rows = [{"prompt": prompt, "chosen": "g", "rejected": "b"} for prompt in prompts]
    train, report = load(tmp_path, rows, "pairwise", input_template="User: {}\nAssistant: ")
    assert [row["prompt"] for row in train] == [
        [{"role": "user", "content": "User: Q\nAssistant: ", "raw": True}],
        [{"role": "user", "content": "User: S\nQ\nAssistant: ", "raw": True}],
    ]
    assert report.counts() == {"bad roles": 1}


def test_input_template_without_placeholder_is_an_error(tmp_path):
    with pytest.raises(RlhfxError, match="input_template"):
        load(tmp_path, [{"prompt": "Q"}], "prompt", input_template="User:")


def test_drop_reasons_are_counted(tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "good", "rejected": "bad"},
        {"prompt": "Q", "chosen": 5, "rejected": "bad"},  # wrong type
        {"prompt": "Q", "rejected": "bad"},  # missing key
        {"prompt": "Q", "chosen": "   ", "rejected": "bad"},  # empty
        {"prompt": "", "chosen": "good", "rejected": "bad"},  # empty
        {"prompt": "Q", "chosen": "same", "rejected": "same"},  # chosen == rejected
        {"prompt": [assistant("Q")], "chosen": "good", "rejected": "bad"},  # bad roles
        {"prompt": [user("Q"), user("again")], "chosen": "good", "rejected": "bad"},  # bad roles
        ["not", "an", "object"],  # wrong type
    ]
    train, report = load(tmp_path, rows, "pairwise")
    assert len(train) == 1
    assert report.counts() == {"wrong type": 2, "bad roles": 2, "empty": 2, "missing key": 1, "chosen == rejected": 1}
    assert report.total_dropped == 8
    name = str(tmp_path / "data.jsonl")
    assert report.to_dict()["datasets"][name]["examples"]["wrong type"] == {
        "row": 1, "detail": "'chosen' is an integer, expected a string or messages"}
    [line] = report.summary_lines()
    assert line.startswith(f"{name}: kept 1 of 9 rows; dropped 8: ")
    assert "missing key 1 (e.g. row 2: no 'chosen')" in line


def test_sft_conversation_must_end_with_assistant(tmp_path):
    rows = [{"messages": [user("Q"), assistant("A")]}, {"messages": [user("Q")]}]
    train, report = load(tmp_path, rows, "sft")
    assert len(train) == 1 and report.counts() == {"bad roles": 1}


def test_all_rows_dropped_names_reason_and_row(tmp_path):
    rows = [{"prompt": "Q", "chosen": "x", "rejected": "x"}, {"prompt": "Q", "chosen": "y", "rejected": "y"}]
    with pytest.raises(RlhfxError, match=r"Every row .* 'chosen == rejected' \(e\.g\. row 0\)"):
        load(tmp_path, rows, "pairwise")


def test_kind_the_data_cannot_give_names_found_and_needed_keys(tmp_path):
    with pytest.raises(RlhfxError) as info:
        load(tmp_path, [{"prompt": "Q", "response": "A"}], "pairwise")
    message = str(info.value)
    assert "['prompt', 'response']" in message and "'chosen'+'rejected'" in message and "--chosen_key" in message


def test_drop_report_accepts_any_reason():
    report = DropReport()
    report.kept("a", 3)
    report.add("too long", "a", 7, "1200 tokens")
    report.add("too long", "a", 9)
    assert report.counts() == {"too long": 2} and report.total_dropped == 2
    assert report.summary_lines() == ["a: kept 3 of 5 rows; dropped 2: too long 2 (e.g. row 7: 1200 tokens)"]
    assert report.top_reason("a") == ("too long", 7, "1200 tokens")
