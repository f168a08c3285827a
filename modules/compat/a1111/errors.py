"""A1111's ``modules.errors``: report and display go to Easel's log."""

from __future__ import annotations

import logging

logger = logging.getLogger("extensions")


def report(message: str, *, exc_info: bool = False) -> None:
    logger.error("%s", message, exc_info=exc_info)


def display(error: BaseException, task: str, *, full_traceback: bool = False) -> None:
    logger.error("extension error task=%s error=%s", task, error, exc_info=error)


def display_once(error: BaseException, task: str) -> None:
    display(error, task)


def print_error_explanation(message: str) -> None:
    logger.error("%s", message)
