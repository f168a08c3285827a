"""Easel: composition root. Parse flags, build the application, serve the UI and the API on one server."""

from __future__ import annotations

import functools
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
    configure_logging()
    from modules.compat import loader as extension_loader  # the composition root wires A1111 extensions in

    prepared = extension_loader.parse_with_extensions(build_parser(), argv)
    args = prepared.args
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        gradio_logins = tuple(parse_auth(args.gradio_auth, args.gradio_auth_path))
        api_logins = tuple(parse_auth(args.api_auth))
    except (OSError, ValueError) as error:
        logger.error("bad --gradio-auth/--api-auth: %s", error)
        return 2

    from modules import server
    from modules.application import Application
    from modules.hub.startup import prepare_models

    try:
        options = server.server_options_from_args(args, gradio_logins, api_logins)
    except server.ServerConfigError as error:
        logger.error("%s", error)
        return 2
    if args.share:
        logger.warning("--share is not supported: Easel serves the UI and the API itself; use --listen on your LAN")
    if args.admin_user and not api_logins and not gradio_logins:
        logger.warning("--admin-user has no effect without --api-auth or --gradio-auth")
    server.warn_about_exposure(options)

    application = Application.create(args, hold_queue=True)
    application.restart = functools.partial(restart_process, application)
    extension_loader.attach(application, prepared)
    application.service.release()  # queued jobs (some from before a restart) run now that their scripts exist
    application.downloads = prepare_models(application)
    mount_ui = None
    if options.ui:
        from modules.ui.app import mount_ui as mount_gradio_ui

        mount_ui = functools.partial(mount_gradio_ui, application=application, auth=list(gradio_logins))
    app = server.create_app(application, options, mount_ui)
    extension_loader.app_started(app)
    application.preload_checkpoint()
    if application.history is not None:
        application.history.start_scan()  # index images already in the output folders (background, with progress)
    try:
        server.serve(app, options)
    finally:
        application.service.shutdown()
    return 0


def restart_process(application: object) -> None:
    """Apply and restart (Extensions tab): the queue stops and this process is replaced by a fresh start with the
    same command line (sockets are not inherited, so the port is free again)."""
    logger.info("restarting: %s", " ".join(sys.argv))
    for listener in application.before_restart:  # type: ignore[attr-defined]
        try:
            listener()
        except Exception:  # an extension's callback: the restart goes on
            logger.exception("before-restart listener failed")
    application.service.shutdown()  # type: ignore[attr-defined]
    os.execv(sys.executable, [sys.executable, *sys.argv])


if __name__ == "__main__":
    raise SystemExit(main())
