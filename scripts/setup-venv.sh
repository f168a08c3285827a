# Sourced by webui.sh and test.sh: make ./venv when absent and install the pinned requirements,
# again only when a requirements file or TORCH_COMMAND changed. Idempotent; each requirements set has its
# own stamp, so running webui.sh and test.sh in turn installs nothing twice.
# Variables: PYTHON (default python3), VENV_DIR (default venv), TORCH_COMMAND, EASEL_EXTRA_REQUIREMENTS.

easel_stamp_matches() {  # easel_stamp_matches STAMP_FILE CONTENT...
    local stamp_file="$1"
    shift
    [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$(printf '%s\n' "$@" | sha256sum | cut -d' ' -f1)" ]
}

easel_write_stamp() {
    local stamp_file="$1"
    shift
    printf '%s\n' "$@" | sha256sum | cut -d' ' -f1 > "$stamp_file"
}

easel_setup_venv() {
    local python="${PYTHON:-python3}"
    VENV_DIR="${VENV_DIR:-venv}"
    local torch_command="${TORCH_COMMAND:-pip install torch==2.14.1 torchvision==0.29.1}"
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        echo "easel: creating $VENV_DIR with $python"
        "$python" -m venv "$VENV_DIR" || { echo "easel: could not create a venv (install python3-venv)"; return 1; }
    fi
    local base_stamp="$VENV_DIR/.easel-installed"
    if ! easel_stamp_matches "$base_stamp" "$torch_command" "$(cat requirements.txt)"; then
        echo "easel: installing requirements into $VENV_DIR"
        "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
        # shellcheck disable=SC2086
        (source "$VENV_DIR/bin/activate" && $torch_command) || { echo "easel: torch install failed: $torch_command"; return 1; }
        "$VENV_DIR/bin/python" -m pip install --quiet -r requirements.txt || { echo "easel: pip install failed"; return 1; }
        easel_write_stamp "$base_stamp" "$torch_command" "$(cat requirements.txt)"
    fi
    local extra
    for extra in ${EASEL_EXTRA_REQUIREMENTS:-}; do
        local extra_stamp="$VENV_DIR/.easel-installed-$(basename "$extra")"
        if ! easel_stamp_matches "$extra_stamp" "$(cat requirements.txt)" "$(cat "$extra")"; then
            echo "easel: installing $extra into $VENV_DIR"
            "$VENV_DIR/bin/python" -m pip install --quiet -r requirements.txt -r "$extra" \
                || { echo "easel: pip install of $extra failed"; return 1; }
            easel_write_stamp "$extra_stamp" "$(cat requirements.txt)" "$(cat "$extra")"
        fi
    done
}

easel_install_xformers() {  # easel_install_xformers [--reinstall]: as A1111's launcher does for --xformers
    # The wheel for the pinned torch (xformers 0.0.35 needs torch >= 2.10), without dependencies so that it never
    # changes torch; only when it is not importable yet (or --reinstall-xformers). XFORMERS_PACKAGE overrides it.
    local package="${XFORMERS_PACKAGE:-xformers==0.0.35}"
    if [ "${1:-}" != "--reinstall" ] && "$VENV_DIR/bin/python" -c "import xformers" >/dev/null 2>&1; then
        return 0
    fi
    echo "easel: installing $package for --xformers"
    "$VENV_DIR/bin/python" -m pip install --quiet -U -I --no-deps "$package" \
        || echo "easel: could not install $package; Easel will use PyTorch SDPA attention"
}
