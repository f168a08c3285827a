"""Custom code (only with ``--allow-code``, as A1111): Python typed in the UI runs as the body of a function that
sees ``job`` (the ScriptJob), ``request`` and ``process``; a ProcessingResult it returns is the job's result,
otherwise ``request`` (which the code may replace) is processed."""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence

from modules.processing.run import ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob
from modules.scripts.controls import Control, Slider, Textbox

logger = logging.getLogger(__name__)

EXAMPLE = """\
# job.request is the request; return a ProcessingResult, or change `request` and let it run.
request = request.model_copy(update={"steps": 10})
"""


class CustomCode(Script):
    def title(self) -> str:
        return "Custom code"

    def ui(self, is_img2img: bool) -> Sequence[Control]:
        return [
            Textbox("code", "Python code", EXAMPLE, lines=8),
            Slider("indent_level", "Indent level", 2, minimum=0, maximum=10, step=1),
        ]

    def run(self, job: ScriptJob, args: ScriptArgs) -> ProcessingResult:
        code = str(args["code"])
        try:
            body = ast.parse(code, "<custom code>").body
        except SyntaxError as error:
            raise ScriptError(f"syntax error in custom code: {error}") from error
        function = ast.FunctionDef(
            name="custom_code",
            args=ast.arguments(posonlyargs=[], args=[ast.arg("request")], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=[*body, ast.parse("return request").body[0]] if body else [ast.parse("return request").body[0]],
            decorator_list=[],
            type_params=[],
        )
        module = ast.fix_missing_locations(ast.Module(body=[function], type_ignores=[]))
        scope: dict[str, object] = {"job": job, "process": job.process}
        logger.warning("custom code run lines=%d", len(code.splitlines()))
        exec(compile(module, "<custom code>", "exec"), scope)
        outcome = scope["custom_code"](job.request)  # type: ignore[operator]
        if isinstance(outcome, ProcessingResult):
            return outcome
        return job.process(outcome if outcome is not None else job.request)  # type: ignore[arg-type]
