"""Reading dataset specs (files, folders, registry names, hub ids), malformed input, sampling, mixing, splits."""

import json
import sys
import types
from collections import Counter

import pytest

from rlhfx.data import DataConfig, load_data
from rlhfx.data.sources import read_dataset, sample_rows, split_take
from rlhfx.errors import RlhfxError
from rlhfx.registry import datasets as registry
from rlhfx.registry.datasets import DEMO_DATA_DIR, bundled_path, dataset_names, get_dataset_entry

PAIR = {"prompt": "Q", "chosen": "good", "rejected": "bad"}
CANONICAL_PAIR = {"prompt": [{"role": "user", "content": "Q"}], "chosen": "good", "rejected": "bad"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def pairs(tmp_path, name, n, tag=None):
    """A JSONL file of n distinct pairs; `tag` goes into every prompt to tell files apart."""
    rows = [{"prompt": f"{tag or name} {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]
    return write_jsonl(tmp_path / name, rows)


def load_pairs(*specs, **options):
    return load_data(DataConfig(list(specs), "pairwise", **options))


# --- file types -------------------------------------------------------------------------------


def test_json_list_json_lines_and_jsonl(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([PAIR, PAIR], indent=2), encoding="utf-8")
    (tmp_path / "lines.json").write_text(json.dumps(PAIR) + "\n\n" + json.dumps(PAIR) + "\n", encoding="utf-8")
    (tmp_path / "one.json").write_text(json.dumps(PAIR, indent=2), encoding="utf-8")
    write_jsonl(tmp_path / "rows.jsonl", [PAIR, PAIR])
    for name, n in (("list.json", 2), ("lines.json", 2), ("one.json", 1), ("rows.jsonl", 2)):
        train, val, _ = load_pairs(str(tmp_path / name))
        assert train == [CANONICAL_PAIR] * n and val is None


def test_csv(tmp_path):
    text = 'prompt,chosen,rejected\nQ,good,bad\n"Q, quoted","g\nmultiline",b\n'
    (tmp_path / "d.csv").write_text(text, encoding="utf-8")
    train, _, _ = load_pairs(str(tmp_path / "d.csv"))
    quoted = {"prompt": [{"role": "user", "content": "Q, quoted"}], "chosen": "g\nmultiline", "rejected": "b"}
    assert train == [CANONICAL_PAIR, quoted]


def test_csv_kto_labels_are_strings(tmp_path):
    (tmp_path / "k.csv").write_text("prompt,completion,label\nQ,a,true\nQ,b,0\n", encoding="utf-8")
    train, _, _ = load_data(DataConfig([str(tmp_path / "k.csv")], "unpaired"))
    assert [row["label"] for row in train] == [True, False]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": [{"role": "user", "content": "Q"}], "chosen": "good", "rejected": "bad"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    train, _, _ = load_pairs(str(tmp_path / "d.parquet"))
    assert train == [CANONICAL_PAIR]


def test_json_dir_reads_every_json_file(tmp_path):
    folder = tmp_path / "dir"
    folder.mkdir()
    pairs(folder, "a.jsonl", 2)
    (folder / "b.json").write_text(json.dumps([PAIR]), encoding="utf-8")
    (folder / "notes.txt").write_text("ignored", encoding="utf-8")
    train, _, _ = load_pairs(f"json@{folder}")
    assert len(train) == 3


# --- malformed input --------------------------------------------------------------------------


def error_of(spec, kind="pairwise"):
    with pytest.raises(RlhfxError) as info:
        load_data(DataConfig([spec], kind))
    return str(info.value)


def test_bad_json_line_is_named(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps(PAIR) + "\n" + '{"prompt": "Q", "chosen": \n', encoding="utf-8")
    message = error_of(str(tmp_path / "d.jsonl"))
    assert "d.jsonl" in message and "line 2" in message and "Fix" in message


def test_bad_json_array_names_line(tmp_path):
    (tmp_path / "d.json").write_text('[\n{"prompt": "Q"},\n{"prompt": }\n]', encoding="utf-8")
    assert "line 3" in error_of(str(tmp_path / "d.json"))


def test_empty_files(tmp_path):
    (tmp_path / "blank.jsonl").write_text("  \n\n", encoding="utf-8")
    assert "is empty" in error_of(str(tmp_path / "blank.jsonl"))
    (tmp_path / "none.json").write_text("[]", encoding="utf-8")
    assert "contains no rows" in error_of(str(tmp_path / "none.json"))
    (tmp_path / "header.csv").write_text("prompt,chosen,rejected\n", encoding="utf-8")
    assert "contains no rows" in error_of(str(tmp_path / "header.csv"))


def test_non_utf8_bytes(tmp_path):
    (tmp_path / "latin.jsonl").write_bytes(json.dumps(PAIR).encode() + b'\n{"prompt": "caf\xe9"}\n')
    message = error_of(str(tmp_path / "latin.jsonl"))
    assert "not UTF-8" in message and "line 2" in message


def test_unsupported_extension_missing_file_and_folder(tmp_path):
    (tmp_path / "d.txt").write_text("hello", encoding="utf-8")
    assert "unsupported extension '.txt'" in error_of(str(tmp_path / "d.txt"))
    assert "does not exist" in error_of(str(tmp_path / "missing.jsonl"))
    assert f"json@{tmp_path}" in error_of(str(tmp_path))
    assert "no .json or .jsonl files" in error_of(f"json@{tmp_path}")


def test_csv_missing_columns(tmp_path):
    (tmp_path / "d.csv").write_text("prompt,chosen\nQ,good\n", encoding="utf-8")
    message = error_of(str(tmp_path / "d.csv"))
    assert "cannot give pairwise rows" in message and "['chosen', 'prompt']" in message


def test_json_scalar_is_not_rows(tmp_path):
    (tmp_path / "d.json").write_text("42", encoding="utf-8")
    assert "holds a JSON int" in error_of(str(tmp_path / "d.json"))


# --- registry, hub ----------------------------------------------------------------------------


def test_registry_names_and_did_you_mean():
    assert {"demo-sft", "demo-pref", "demo-kto", "demo-prompts", "hh-rlhf", "alpaca"} <= set(dataset_names())
    entry = get_dataset_entry("ultrafeedback-binarized")
    assert entry.source == "HuggingFaceH4/ultrafeedback_binarized" and entry.split == "train_prefs"
    assert get_dataset_entry("nope") is None
    assert bundled_path("bundled:x.jsonl") == DEMO_DATA_DIR / "x.jsonl" and bundled_path("org/x") is None
    message = error_of("demo-prefs")
    assert "not a registered name" in message and "Did you mean 'demo-pref'" in message
    assert "Use a registered name" in error_of("zzzz")


@pytest.mark.parametrize("name,kind", [("demo-sft", "sft"), ("demo-pref", "pairwise"),
                                       ("demo-kto", "unpaired"), ("demo-prompts", "prompt")])
def test_demo_entries_load_with_their_validation_files(name, kind):
    entry = get_dataset_entry(name)
    assert bundled_path(entry.source).exists() and bundled_path(entry.val_source).exists(), f"{name} files missing"
    assert entry.kind == kind
    train, val, report = load_data(DataConfig([name], kind))
    assert train and val and report.total_dropped == 0


def fake_datasets(monkeypatch, rows):
    calls = []

    class FakeDataset:
        def to_list(self):
            return rows

    def load_dataset(path, name=None, split=None, num_proc=None):
        calls.append((path, name, split) if num_proc is None else (path, name, split, num_proc))
        return FakeDataset()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_ids_go_to_load_dataset(monkeypatch):
    calls = fake_datasets(monkeypatch, [PAIR])
    assert load_pairs("org/name")[0] == [CANONICAL_PAIR]
    assert load_pairs("org/name:subset#3")[0] == [CANONICAL_PAIR] * 3
    assert load_pairs("ultrafeedback-binarized")[0] == [CANONICAL_PAIR]
    assert calls == [("org/name", None, "train"), ("org/name", "subset", "train"),
                     ("HuggingFaceH4/ultrafeedback_binarized", None, "train_prefs")]


def test_dataset_num_proc_reaches_load_dataset(monkeypatch):
    """ms-swift's --dataset_num_proc is datasets' num_proc when a hub dataset is prepared."""
    calls = fake_datasets(monkeypatch, [PAIR])
    load_pairs("org/name", num_proc=4)
    assert calls == [("org/name", None, "train", 4)]


def test_registry_columns_are_renamed(monkeypatch):
    fake_datasets(monkeypatch, [{"question": "Q", "answer_zh": "good", "answer_en": "bad"}])
    assert load_pairs("shareai-llama3-dpo-zh-en-emoji")[0] == [CANONICAL_PAIR]


def test_hub_failure_is_an_rlhfx_error(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert "Could not load hub dataset 'org/name'" in error_of("org/name")


# --- sampling, mixing, splitting -------------------------------------------------------------


def test_split_take():
    assert split_take("a.jsonl#10") == ("a.jsonl", 10)
    assert split_take("org/x:sub") == ("org/x:sub", None)
    with pytest.raises(RlhfxError, match="0 rows"):
        split_take("a#0")


def test_sample_rows_subset_and_repeat():
    rows = list(range(10))
    subset = sample_rows(rows, 4, seed=1)
    assert len(subset) == 4 and subset == sorted(set(subset)) and subset == sample_rows(rows, 4, seed=1)
    assert sample_rows(rows, 10, seed=1) == rows
    more = sample_rows(rows, 25, seed=1)
    assert Counter(more) == Counter(rows * 2 + more[20:]) and len(set(more[20:])) == 5


def test_take_suffix_samples_rows(tmp_path):
    path = pairs(tmp_path, "d.jsonl", 10)
    assert len(load_pairs(path + "#4")[0]) == 4
    assert load_pairs(path + "#4")[0] == load_pairs(path + "#4")[0]
    assert len(load_pairs(path + "#25")[0]) == 25


def test_mixing_with_probs(tmp_path):
    a, b = pairs(tmp_path, "a.jsonl", 100), pairs(tmp_path, "b.jsonl", 100)
    train, _, _ = load_pairs(a, b, dataset_probs=[0.8, 0.2])
    sources = Counter(row["prompt"][0]["content"].split()[0] for row in train)
    assert sources == {"a.jsonl": 160, "b.jsonl": 40}
    assert train == load_pairs(a, b, dataset_probs=[0.8, 0.2])[0]
    assert train != load_pairs(a, b, dataset_probs=[0.8, 0.2], seed=7)[0]
    train, _, _ = load_pairs(a, b, dataset_probs=[1, 3], max_samples=40)
    assert Counter(row["prompt"][0]["content"].split()[0] for row in train) == {"a.jsonl": 10, "b.jsonl": 30}


def test_mixing_without_probs_concatenates(tmp_path):
    a, b = pairs(tmp_path, "a.jsonl", 3), pairs(tmp_path, "b.jsonl", 2)
    train, _, report = load_pairs(a, b)
    prompts = [row["prompt"][0]["content"] for row in train]
    assert prompts == ["a.jsonl 0", "a.jsonl 1", "a.jsonl 2", "b.jsonl 0", "b.jsonl 1"]
    assert report.summary_lines() == [f"{a}: kept 3 of 3 rows", f"{b}: kept 2 of 2 rows"]


def test_split_ratio_and_max_samples(tmp_path):
    path = pairs(tmp_path, "d.jsonl", 20)
    train, val, _ = load_pairs(path, split_dataset_ratio=0.25)
    assert len(train) == 15 and len(val) == 5
    assert {r["chosen"] for r in train}.isdisjoint(r["chosen"] for r in val)
    assert (train, val) == load_pairs(path, split_dataset_ratio=0.25)[:2]
    train, val, _ = load_pairs(path, split_dataset_ratio=0.25, max_samples=6)
    assert len(train) == 6 and len(val) == 5
    with pytest.raises(RlhfxError, match="holds out all"):
        load_pairs(pairs(tmp_path, "one.jsonl", 1), split_dataset_ratio=0.5)


def test_val_datasets_and_bundled_validation(tmp_path, monkeypatch):
    train_path, val_path = pairs(tmp_path, "t.jsonl", 5), pairs(tmp_path, "v.jsonl", 3)
    train, val, report = load_pairs(train_path, val_datasets=[val_path])
    assert len(train) == 5 and len(val) == 3 and report.kept_count(f"{val_path} (val)") == 3

    # A registry entry with a bundled validation file uses it unless told otherwise.
    pairs(tmp_path, "demo_train.jsonl", 8)
    pairs(tmp_path, "demo_val.jsonl", 2)
    entry = registry.DatasetEntry("tmp-demo", "bundled:demo_train.jsonl", "pairwise", None, "bundled:demo_val.jsonl")
    monkeypatch.setattr(registry, "DEMO_DATA_DIR", tmp_path)
    monkeypatch.setitem(registry._BY_NAME, "tmp-demo", entry)
    train, val, report = load_pairs("tmp-demo#4")
    assert len(train) == 4 and len(val) == 2 and report.kept_count("tmp-demo (val)") == 2
    train, val, _ = load_pairs("tmp-demo", split_dataset_ratio=0.25)
    assert len(train) == 6 and len(val) == 2
    assert all(row["prompt"][0]["content"].startswith("demo_train") for row in val)
    assert read_dataset("tmp-demo").val_source == "bundled:demo_val.jsonl"


@pytest.mark.parametrize("options,match", [
    ({"kind": "rm"}, "Unknown data kind"),
    ({"dataset_probs": [1.0, 2.0]}, "dataset_probs"),
    ({"dataset_probs": [0.0]}, "dataset_probs"),
    ({"split_dataset_ratio": 1.0}, "split_dataset_ratio"),
    ({"max_samples": 0}, "max_samples"),
])
def test_config_errors(tmp_path, options, match):
    config = {"datasets": [pairs(tmp_path, "d.jsonl", 3)], "kind": "pairwise", **options}
    with pytest.raises(RlhfxError, match=match):
        load_data(DataConfig(**config))
