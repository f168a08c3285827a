"""Easel: composition root. Parse flags, build the application, launch the UI."""

from __future__ import annotations

import logging
import os
import sys

from modules.cmd_args import build_parser, parse_auth

logger = logging.getLogger("easel")


def configure_logging() -> None:
    level = os.environ.get("EASEL_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore", "urllib3", "PIL", "matplotlib", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        auth = parse_auth(args.gradio_auth, args.gradio_auth_path)
    except (OSError, ValueError) as error:
        logger.error("bad --gradio-auth: %s", error)
        return 2

    from modules.application import Application
    from modules.ui.app import launch_ui

    application = Application.create(args)
    if (args.listen or args.server_name) and not auth:
        logger.warning("serving on the network without --gradio-auth: anyone on your LAN can use this UI")
    launch_ui(application, auth=auth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
