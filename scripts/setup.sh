#!/usr/bin/env bash
# Create .venv (once) and install rlhfx with its test extras. Safe to re-run: a no-op when up to date.
# torch is pinned first on machines without an NVIDIA driver (2.13.0 is a local CPU wheel here), so pip
# does not pull a multi-GB CUDA build; set RLHFX_TORCH_SPEC to choose another torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install -q "${RLHFX_TORCH_SPEC:-torch}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  else
    pip install -q "${RLHFX_TORCH_SPEC:-torch==2.13.0}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  fi
fi
# Reinstall only when pyproject.toml changed since the last install (an editable install sees code changes).
STAMP=.venv/.rlhfx-pyproject.sha
if [ "$(cat "$STAMP" 2>/dev/null)" != "$(sha256sum pyproject.toml)" ]; then
  echo "installing rlhfx and its dependencies into .venv (log: .venv/pip-install.log)"
  # deepspeed (for --deepspeed and its CPU tests) builds no kernels at install time (DS_BUILD_OPS=0): about 15 s;
  # ray (--ray_address and tests/test_rl_ray.py) is one prebuilt wheel and a few small packages
  DS_BUILD_OPS=0 pip install -e ".[dev,deepspeed,ray]" > .venv/pip-install.log 2>&1 || { tail -40 .venv/pip-install.log; exit 1; }
  sha256sum pyproject.toml > "$STAMP"
fi
python -c "import rlhfx, trl, transformers, peft; print('rlhfx', rlhfx.__version__, '| trl', trl.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
