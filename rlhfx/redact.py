"""Keep secrets out of what rlhfx writes and prints: flag values that are keys, and credentials inside URLs.

`redact(value)` walks dicts, lists and strings: a secret flag's value (`--use_wandb KEY`) becomes REDACTED, and in
any string the password of `scheme://user:password@host` (or the token of `scheme://token@host`) and the value of a
query parameter named like a secret
(`?api_key=...`, `token=`, `secret=`, `password=`, `sig=` ...) do too. Every JSON file a run or loop writes goes
through it (rlhfx.training.outputs.write_json_atomic), and so do messages that show a URL.
"""

import re

REDACTED = "REDACTED"
# flags whose value is a secret; --use_wandb's may also be true/false (use the key `wandb login` saved)
SECRET_FLAGS = {"use_wandb"}
_BOOLEAN_WORDS = {"true", "false", "1", "0", "yes", "no"}
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(?=@)")
_URL_TOKEN_USER = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+(?=@)")  # https://TOKEN@host
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&;](?:[a-z0-9_.-]*(?:key|token|secret|password|passwd|pwd|auth|credential|signature)[a-z0-9_.-]*"
    r"|sig|code)=)[^&;#\s]+", re.IGNORECASE)


def redact_text(text: str) -> str:
    """`text` with URL passwords and secret query values replaced."""
    text = _URL_TOKEN_USER.sub(rf"\g<head>{REDACTED}", _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", text))
    return _SECRET_QUERY.sub(rf"\g<head>{REDACTED}", text)


def redact(value, key: str | None = None):
    """A copy of `value` (dicts, lists, strings, other scalars) with every secret replaced; `key` is the name the
    value was found under."""
    if key in SECRET_FLAGS and value is not None and str(value).lower() not in _BOOLEAN_WORDS:
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_argv(argv: list[str]) -> list[str]:
    """A command line to print: the value after a secret flag, and URL credentials anywhere."""
    out = []
    for i, token in enumerate(argv):
        flag = argv[i - 1].lstrip("-") if i else ""
        name, _, inline = token.partition("=")
        if flag in SECRET_FLAGS and not token.startswith("-"):
            out.append(redact(token, flag))
        elif inline and name.lstrip("-") in SECRET_FLAGS:
            out.append(f"{name}={redact(inline, name.lstrip('-'))}")
        else:
            out.append(redact_text(token))
    return out
