"""Reward sources that misbehave: a reward function that hangs or raises, an HTTP server that answers garbage or
cuts its reply short. Each is retried where that can help, then stops the run with a clear error."""

import socket
import threading

import pytest

from rlhfx.errors import RlhfxError
from rlhfx.rewards.functions import call_reward_func, load_reward_func
from rlhfx.rewards.sources import RemoteReward, Sample

SAMPLES = [Sample([], "p", "ab"), Sample([], "p", "a")]
GOOD = b'{"rewards": [1.0, 2.0]}'


def reward_file(tmp_path, body: str) -> str:
    path = tmp_path / "my_reward.py"
    path.write_text("import time\n\ndef reward_func(queries, prompts, labels):\n" + body)
    return str(path)


def test_a_reward_function_that_hangs_times_out(tmp_path):
    spec = reward_file(tmp_path, "    time.sleep(60)\n    return [0.0] * len(queries)\n")
    with pytest.raises(RlhfxError, match=r"reward_func in .*my_reward.py did not return within 0.5 seconds") as error:
        call_reward_func(load_reward_func(spec), ["pa"], ["p"], [None], spec, timeout=0.5)
    assert "--reward_func_timeout" in error.value.fix


def test_a_reward_function_that_raises_names_itself_the_file_line_and_exception(tmp_path):
    spec = reward_file(tmp_path, "    return [1 / 0 for q in queries]\n")
    with pytest.raises(RlhfxError) as error:
        call_reward_func(load_reward_func(spec), ["pa"], ["p"], [None], spec, timeout=5)
    assert f"reward_func in {spec} raised ZeroDivisionError: division by zero (line 4 of {spec})" in str(error.value)


def test_a_quick_reward_function_is_not_slowed_by_the_timeout(tmp_path):
    spec = reward_file(tmp_path, "    return [float(len(q)) for q in queries]\n")
    assert call_reward_func(load_reward_func(spec), ["pab", "pa"], ["p", "p"], [None, None], spec, timeout=5) == [3.0, 2.0]


def read_request(conn: socket.socket) -> None:
    """Reads the whole HTTP request: closing a socket with unread bytes sends a reset, which the client would see
    instead of the reply under test (a request whose body arrives in a second packet)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += conn.recv(65536)


def raw_server(replies: list[bytes]):
    """A TCP server on 127.0.0.1 that answers the i-th connection with replies[i] (the last one from then on)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    served = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                read_request(conn)
                served.append(1)  # before the reply: the client may return as soon as it has it
                conn.sendall(replies[min(len(served) - 1, len(replies) - 1)])

    threading.Thread(target=serve, daemon=True).start()
    return server, served, f"http://127.0.0.1:{server.getsockname()[1]}/get_reward?key=s3cret"


def http(body: bytes, length: int | None = None) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length)) + body


@pytest.mark.parametrize("bad", [b"SSH-2.0-OpenSSH_9.6\r\n", http(GOOD[:10], len(GOOD))], ids=["not-http", "truncated"])
def test_a_bad_reply_is_retried_then_succeeds(bad):
    server, served, url = raw_server([bad, http(GOOD)])
    try:
        assert RemoteReward(url, timeout=5, retries=3, backoff=0)(SAMPLES) == [1.0, 2.0]
    finally:
        server.close()
    assert len(served) == 2


@pytest.mark.parametrize("bad", [b"SSH-2.0-OpenSSH_9.6\r\n", http(GOOD[:10], len(GOOD))], ids=["not-http", "truncated"])
def test_a_server_that_keeps_answering_badly_is_a_clear_error(bad):
    server, served, url = raw_server([bad])
    try:
        with pytest.raises(RlhfxError) as error:
            RemoteReward(url, timeout=5, retries=2, backoff=0)(SAMPLES)
    finally:
        server.close()
    assert len(served) == 2 and "failed 2 times" in str(error.value)
    assert ("BadStatusLine" if bad.startswith(b"SSH") else "IncompleteRead") in str(error.value)
    assert "s3cret" not in str(error.value) and "key=REDACTED" in str(error.value)
