"""`rlhfx data check` reports what a run would make of a dataset: layout, drops by reason, pairs, labels, lengths."""

import json

from cli_inprocess import run_cli  # noqa: F401 (fixture)


def write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_pairwise_report_counts_each_problem(tmp_path, run_cli):
    data = write(tmp_path / "pairs.jsonl", [
        {"question": "Hi", "good": "Hello there", "bad": "Go"},
        {"question": "Yo", "good": "Same", "bad": "Same"},
        {"question": "Hey", "bad": "No"},
        {"question": "Hm", "good": "Fine, thanks", "bad": "Meh"},
    ])
    code, text = run_cli("data", "check", "--rlhf_type", "dpo", "--dataset", data, "--prompt_key", "question",
                         "--chosen_key", "good", "--rejected_key", "bad")
    assert code == 0, text
    assert "4 rows read, layout preference" in text and "question -> prompt, good -> chosen, bad -> rejected" in text
    assert "kept 2 of 4 rows" in text and "drops by reason: chosen == rejected 1, missing key 1" in text
    assert "chosen == rejected: 1 pairs" in text
    assert "length in characters: min 15, median 16, p95 17, max 17" in text  # "Hi"+"Hello there"+"Go", "Hm"+...
    assert "ok: 2 training and 0 validation pairwise rows" in text


def test_kto_label_balance_and_token_lengths(tmp_path, run_cli):
    data = write(tmp_path / "kto.jsonl", [{"prompt": f"Tell me about fox {i}.", "completion": "It is red.", "label": i % 3 == 0}
                                          for i in range(6)])
    code, text = run_cli("data", "check", "--kind", "unpaired", "--dataset", f"{data}#4", "--model", "tiny", "--max_length", "40")
    assert code == 0, text
    assert "kept 6 of 6 rows, of which the #N suffix takes 4" in text
    assert "label balance: 1 desirable, 3 undesirable (25% desirable)" in text  # rows 0 and 3 are desirable; #4 (seed 42) keeps one
    assert "length in tokens: min 23" in text and "longer than --max_length 40: 0 of 4 rows" in text
