#!/usr/bin/env bash
# Start Easel: set up ./venv (first run, or when requirements.txt changed), then run webui.py with your flags.
# TORCH_COMMAND overrides how torch is installed, e.g. for ROCm:
#   TORCH_COMMAND="pip install torch torchvision --index-url https://download.pytorch.org/whl/rocm6.4" ./webui.sh
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-venv.sh
easel_setup_venv
case " $* " in
    *" --reinstall-xformers "*) easel_install_xformers --reinstall ;;
    *" --xformers "*) easel_install_xformers ;;
esac
exec "$VENV_DIR/bin/python" webui.py "$@"
