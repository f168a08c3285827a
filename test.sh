#!/usr/bin/env bash
# Set up ./venv with the test tools, then run ruff and pytest. Extra arguments go to pytest:
#   ./test.sh                 fast tests (slow and gpu ones are off)
#   ./test.sh -m slow         the slow tests;   ./test.sh -m gpu   the GPU tests
#   ./test.sh tests/test_x.py -k name
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
EASEL_EXTRA_REQUIREMENTS="requirements-test.txt requirements-ray.txt" easel_setup_venv  # Ray: the cluster tests

# Browser tests use Debian's chromium; install it where we can (root with apt), else they skip with the reason.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "easel: installing chromium for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "easel: chromium could not be installed; browser tests will skip"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
"$VENV_DIR/bin/ruff" check .
"$VENV_DIR/bin/ruff" format --check .
exec "$VENV_DIR/bin/python" -m pytest "$@"
