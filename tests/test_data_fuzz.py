"""Fuzz: arbitrary JSON-ish rows and file bytes fail only with RlhfxError, and no row goes uncounted."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfx.data import KINDS, DataConfig, DropReport, load_data
from rlhfx.data.formats import normalise_rows
from rlhfx.errors import RlhfxError

KEYS = ["messages", "conversations", "prompt", "chosen", "rejected", "completion", "label", "response",
        "rejected_response", "query", "history", "system", "instruction", "input", "output", "answer", "margin"]
ROLES = ["system", "user", "assistant", "human", "gpt", "tool", ""]

scalars = st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=False) | st.text(max_size=6)
message = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(ROLES) | scalars, "content": scalars,
    "from": st.sampled_from(ROLES), "value": st.text(max_size=6)})
junk = st.recursive(scalars | st.lists(message, max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=8)
# Mostly plausible values (short texts, often blank; alternating conversations; label spellings), some junk.
text = st.sampled_from(["a", "b", "a b", "", " "]) | st.text(max_size=3)
conversation = st.lists(text, min_size=1, max_size=4).map(
    lambda texts: [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)])
label = st.booleans() | st.sampled_from([0, 1, "true", "False", "yes", 2])
history = st.lists(st.lists(text, min_size=2, max_size=2), max_size=2)
VALUES = {"label": label | junk, "history": history | junk, "margin": st.floats(-2, 2) | junk}
for key in ("messages", "conversations", "prompt", "chosen", "rejected", "completion"):
    VALUES[key] = st.one_of(text, conversation, conversation, junk)
LAYOUTS = [["messages"], ["conversations"], ["instruction", "input", "output", "system"],
           ["query", "response", "history", "rejected_response"], ["prompt", "chosen", "rejected", "margin"],
           ["chosen", "rejected"], ["prompt", "completion", "label"], ["prompt", "answer"], ["messages", "label"],
           ["messages", "rejected_response"], ["prompt", "response"]]


@st.composite
def datasets(draw):
    """Rows of one layout (plus stray keys), some keys missing, some rows junk."""
    keys = draw(st.sampled_from(LAYOUTS)) + draw(st.lists(st.sampled_from(KEYS), max_size=2))
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.integers(0, 9)) == 0:
            rows.append(draw(junk))
        else:
            rows.append({k: draw(VALUES.get(k, text | junk)) for k in keys if draw(st.integers(0, 9))})
    return rows


def assert_canonical(kind, out):
    def messages_ok(turns):
        return isinstance(turns, list) and turns and all(
            t["role"] in ("system", "user", "assistant") and isinstance(t["content"], str) for t in turns)

    for item in out:
        if kind == "sft":
            assert messages_ok(item["messages"]) and item["messages"][-1]["role"] == "assistant"
        else:
            assert messages_ok(item["prompt"]) and item["prompt"][-1]["role"] == "user"
        if kind == "pairwise":
            assert isinstance(item["chosen"], str) and isinstance(item["rejected"], str)
            assert item["chosen"] != item["rejected"]
        if kind == "unpaired":
            assert isinstance(item["completion"], str) and isinstance(item["label"], bool)
        if kind == "prompt":
            assert item["label"] is None or isinstance(item["label"], str)


@settings(max_examples=300, deadline=None)
@given(rows=datasets(), kind=st.sampled_from(KINDS), system=st.none() | st.just("S"),
       template=st.none() | st.just("U: {}\nA: "))
def test_rows_never_crash_and_are_all_counted(rows, kind, system, template):
    report = DropReport()
    try:
        out = normalise_rows(rows, kind, "fuzz", report, system=system, input_template=template)
    except RlhfxError:
        return
    assert report.kept_count("fuzz") + report.dropped("fuzz") == len(rows)
    assert_canonical(kind, out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=60) | st.text(max_size=60).map(str.encode),
       ext=st.sampled_from([".json", ".jsonl", ".csv"]), kind=st.sampled_from(KINDS))
def test_file_bytes_never_crash(data, ext, kind):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"d{ext}"
        path.write_bytes(data)
        try:
            load_data(DataConfig([str(path)], kind))
        except RlhfxError:
            pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=datasets(), kind=st.sampled_from(KINDS), damage=st.sampled_from([None, "blank lines", "broken line", "latin1"]))
def test_jsonl_files_of_rows_are_all_counted_or_refused(rows, kind, damage):
    """Rows written as a JSON Lines file: every line is kept or counted as dropped; a broken line or a
    non-UTF-8 byte is refused with an RlhfxError naming the file, never skipped."""
    lines = [json.dumps(row) for row in rows]
    text = ("\n\n" if damage == "blank lines" else "\n").join(lines) + "\n"
    data = (text + ("{\"prompt\": \n" if damage == "broken line" else "")).encode()
    data += b'{"prompt": "caf\xe9"}\n' if damage == "latin1" else b""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rows.jsonl"
        path.write_bytes(data)
        try:
            _, _, report = load_data(DataConfig([str(path)], kind))
        except RlhfxError as error:
            assert "rows.jsonl" in str(error) or "dropped" in str(error) or "cannot give" in str(error)
            return
    assert damage not in ("broken line", "latin1"), "a damaged file was read without complaint"
    if not lines[0].startswith("["):  # a first row that is a list makes the file one JSON array
        assert report.kept_count(str(path)) + report.dropped(str(path)) == len(rows)
