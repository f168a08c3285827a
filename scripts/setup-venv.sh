# Sourced by webui.sh and test.sh: make ./venv when absent and install the pinned requirements,
# again only when a requirements file or TORCH_COMMAND changed. Idempotent.
# Variables: PYTHON (default python3), VENV_DIR (default venv), TORCH_COMMAND, EASEL_EXTRA_REQUIREMENTS.

easel_setup_venv() {
    local python="${PYTHON:-python3}"
    VENV_DIR="${VENV_DIR:-venv}"
    local torch_command="${TORCH_COMMAND:-pip install torch==2.14.1 torchvision==0.29.1}"
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        echo "easel: creating $VENV_DIR with $python"
        "$python" -m venv "$VENV_DIR" || { echo "easel: could not create a venv (install python3-venv)"; return 1; }
    fi
    local stamp_file="$VENV_DIR/.easel-installed"
    local stamp
    stamp=$( { echo "$torch_command"; cat requirements.txt ${EASEL_EXTRA_REQUIREMENTS:-}; } | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        return 0
    fi
    echo "easel: installing requirements into $VENV_DIR"
    "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086
    (source "$VENV_DIR/bin/activate" && $torch_command) || { echo "easel: torch install failed: $torch_command"; return 1; }
    local files=(-r requirements.txt)
    for extra in ${EASEL_EXTRA_REQUIREMENTS:-}; do files+=(-r "$extra"); done
    "$VENV_DIR/bin/python" -m pip install --quiet "${files[@]}" || { echo "easel: pip install failed"; return 1; }
    echo "$stamp" > "$stamp_file"
}
