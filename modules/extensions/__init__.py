"""Extensions in A1111's layout: listing (``extensions-builtin/`` then ``DATA_DIR/extensions/``), metadata.ini,
the disabled list in config.json, git information, install.py, and installing / updating / removing with git."""
