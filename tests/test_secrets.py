"""Secrets stay out of every file rlhfx writes: flag values that are keys, credentials in URLs; a reward server's
key travels in a header taken from the environment."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from cli_inprocess import run_cli  # noqa: F401 (fixture)

from rlhfx.redact import REDACTED, redact, redact_argv

URL_SECRET, HEADER_SECRET, WANDB_SECRET = "urlsecret123", "headersecret456", "0123456789abcdef0123456789abcdef01234567"


def test_redact_flags_and_url_credentials():
    record = {"use_wandb": WANDB_SECRET, "prompt_key": "question", "learning_rate": 1e-4, "dataset": ["demo-pref"],
              "remote_rm_url": [f"https://bob:{URL_SECRET}@rm.example.com/score?api_key={URL_SECRET}&batch=8",
                                f"http://h/x?access_token={URL_SECRET}#frag", f"http://h/x?X-Amz-Signature={URL_SECRET}",
                                f"https://{URL_SECRET}@rm.example.com/score"]}
    out = redact(record)
    assert URL_SECRET not in json.dumps(out) and WANDB_SECRET not in json.dumps(out)
    assert out["remote_rm_url"][0] == f"https://bob:{REDACTED}@rm.example.com/score?api_key={REDACTED}&batch=8"
    assert out["remote_rm_url"][1] == f"http://h/x?access_token={REDACTED}#frag"
    assert out["remote_rm_url"][3] == f"https://{REDACTED}@rm.example.com/score"
    assert out["use_wandb"] == REDACTED and out["prompt_key"] == "question" and out["learning_rate"] == 1e-4
    assert redact({"use_wandb": "True"}) == {"use_wandb": "True"}  # not a key: the one `wandb login` saved
    assert redact_argv(["--use_wandb", WANDB_SECRET, "--use_wandb=" + WANDB_SECRET, "--lr", "1e-4"]) == [
        "--use_wandb", REDACTED, f"--use_wandb={REDACTED}", "--lr", "1e-4"]


def test_pipeline_state_json_holds_no_wandb_key(tmp_path):
    from rlhfx.arguments import parse_args
    from rlhfx.loops.state import STATE_FILE, load_or_start

    argv = ["--model", "tiny", "--dataset", "demo-prompts", "--reward_func", "demo", "--use_wandb", WANDB_SECRET]
    state, resumed = load_or_start(tmp_path, "rs", parse_args("pipeline", argv))
    state.save(tmp_path)
    text = (tmp_path / STATE_FILE).read_text()
    assert WANDB_SECRET not in text and json.loads(text)["flags"]["use_wandb"] == REDACTED
    _, resumed = load_or_start(tmp_path, "rs", parse_args("pipeline", argv))  # the same command resumes it
    assert resumed


class KeyedRewards(BaseHTTPRequestHandler):
    """A reward server that answers only requests carrying `Authorization: Bearer HEADER_SECRET`."""

    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        KeyedRewards.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != f"Bearer {HEADER_SECRET}":
            self.send_response(401)
            self.end_headers()
            return
        data = json.dumps({"rewards": [float(len(q) % 3) for q in body["query"]]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def keyed_server():
    server = HTTPServer(("127.0.0.1", 0), KeyedRewards)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    KeyedRewards.seen = []
    yield f"http://127.0.0.1:{server.server_port}/get_reward?token={URL_SECRET}"
    server.shutdown()


def test_reward_server_key_comes_from_the_environment(keyed_server, monkeypatch):
    from rlhfx.errors import RlhfxError
    from rlhfx.rewards.sources import API_KEY_ENV, RemoteReward, Sample

    samples = [Sample([], "p", "ab"), Sample([], "p", "a")]
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(RlhfxError) as error:
        RemoteReward(keyed_server, retries=1, backoff=0)(samples)
    assert "401" in str(error.value) and API_KEY_ENV in error.value.fix and URL_SECRET not in str(error.value)
    monkeypatch.setenv(API_KEY_ENV, HEADER_SECRET)
    assert RemoteReward(keyed_server, retries=1, backoff=0)(samples) == [0.0, 2.0]
    assert KeyedRewards.seen == [None, f"Bearer {HEADER_SECRET}"]


def test_grpo_run_with_a_keyed_reward_server_writes_no_secret(run_cli, keyed_server, monkeypatch, tmp_path):
    monkeypatch.setenv("RLHFX_REMOTE_RM_API_KEY", HEADER_SECRET)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out = tmp_path / "out"
    code, text = run_cli("rlhf", "--rlhf_type", "grpo", "--model", "tiny", "--dataset", "demo-prompts#8",
                         "--remote_rm_url", keyed_server, "--max_steps", "1", "--rollout_batch_size", "2",
                         "--n_samples_per_prompt", "2", "--generate_max_len", "4", "--output_dir", out)
    assert code == 0, text
    assert KeyedRewards.seen and set(KeyedRewards.seen) == {f"Bearer {HEADER_SECRET}"}
    args = json.loads((out / "args.json").read_text())
    assert args["remote_rm_url"] == [keyed_server.replace(URL_SECRET, REDACTED)]
    for file in Path(out).rglob("*"):
        if file.is_file():
            content = file.read_bytes()
            assert URL_SECRET.encode() not in content and HEADER_SECRET.encode() not in content, file
    assert URL_SECRET not in text and HEADER_SECRET not in text
