"""The scripts of the application (a catalogue per tab) and the runner bound to one job.

The catalogue answers A1111's questions by name (``/scripts``, ``/script-info``, ``script_name``,
``alwayson_scripts``); a ``BoundScripts`` is the job's selection with each script's arguments by name, and is the
``ScriptHooks`` processing calls. A failing always-on hook is logged with the script's name, noted on the job and
the script is left out for the rest of the job; a failing selectable script, or an always-on one that raises
ScriptError (arguments it refuses, such as a missing ControlNet model), fails the job with its message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from modules.processing.hooks import ImageToPostprocess
from modules.processing.job import JobControl
from modules.processing.processing import ProcessingContext, ProcessingError, process
from modules.processing.requests import GenerationRequest
from modules.processing.run import GenerationRun, ProcessingResult
from modules.scripts.base import Script, ScriptArgs, ScriptError, ScriptJob, Visibility
from modules.scripts.controls import Control, default_arguments, positional_arguments

logger = logging.getLogger(__name__)


class ScriptNotFoundError(LookupError):
    """A script name the tab does not have (A1111: HTTP 422 ``Script '<name>' not found``)."""


@dataclass
class TabScripts:
    """The scripts of one tab (txt2img or img2img) in load order, with their controls."""

    is_img2img: bool
    scripts: list[Script]
    controls: dict[int, list[Control]] = field(default_factory=dict)  # id(script) -> its ui() controls

    def visibility(self, script: Script) -> Visibility:
        return script.show(self.is_img2img)

    @property
    def selectable(self) -> list[Script]:
        return [script for script in self.scripts if self.visibility(script) is Visibility.SELECTABLE]

    @property
    def always_on(self) -> list[Script]:
        return [script for script in self.scripts if self.visibility(script) is Visibility.ALWAYS_ON]

    def controls_of(self, script: Script) -> list[Control]:
        if id(script) not in self.controls:
            self.controls[id(script)] = list(script.ui(self.is_img2img))
        return self.controls[id(script)]

    def with_ui(self) -> list[Script]:
        """A1111 lists (``/scripts``, ``/script-info``) only the scripts whose ``ui()`` returned controls."""
        return [script for script in self.selectable + self.always_on if self.controls_of(script)]

    def find(self, name: str) -> Script:
        """A script of this tab by its title, any case (A1111's ``script_name_to_index``)."""
        wanted = name.lower()
        for script in self.scripts:
            if self.visibility(script) is not Visibility.HIDDEN and script.api_name == wanted:
                return script
        raise ScriptNotFoundError(f"Script '{name}' not found")

    def find_selectable(self, name: str) -> Script:
        script = self.find(name)
        if self.visibility(script) is not Visibility.SELECTABLE:
            raise ScriptNotFoundError(f"Script '{name}' not found")
        return script

    def arguments(self, script: Script, values: Sequence[Any] | Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The script's arguments by name: defaults, then positional values (A1111's API) or named ones."""
        controls = self.controls_of(script)
        if values is None:
            return default_arguments(controls)
        if isinstance(values, Mapping):
            by_name = {control.name: control for control in controls}
            unknown = sorted(set(values) - set(by_name))
            if unknown:
                raise ValueError(f"{script.title()}: unknown arguments {', '.join(unknown)}")
            return {**default_arguments(controls), **{k: by_name[k].convert(v) for k, v in values.items()}}
        try:
            return positional_arguments(controls, values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{script.title()}: {error}") from error

    def bind(
        self,
        selected: tuple[Script, Mapping[str, Any]] | None = None,
        always_on: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> BoundScripts:
        """The job's scripts: the selected one with its arguments, and every always-on script (with the arguments
        given for it in ``always_on`` by ``id(script)``, else its defaults)."""
        given = always_on or {}
        active = [(script, dict(given.get(id(script)) or self.arguments(script))) for script in self.always_on]
        defaults = {id(script): self.arguments(script) for script in self.always_on}
        return BoundScripts(selected=selected, always_on=active, is_img2img=self.is_img2img, defaults=defaults)

    def by_title(self, title: str) -> Script | None:
        return next((script for script in self.scripts if safe_title(script) == title), None)


@dataclass
class ScriptCatalogue:
    """Every loaded script, with one tab view per task (A1111 makes one runner per tab)."""

    scripts: list[Script] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # scripts that could not load, with the reason
    _tabs: dict[bool, TabScripts] = field(default_factory=dict, repr=False)

    def tab(self, is_img2img: bool) -> TabScripts:
        if is_img2img not in self._tabs:
            self._tabs[is_img2img] = TabScripts(is_img2img, self._shown(is_img2img))
        return self._tabs[is_img2img]

    def _shown(self, is_img2img: bool) -> list[Script]:
        shown = []
        for script in self.scripts:
            try:
                if script.show(is_img2img) is not Visibility.HIDDEN:
                    shown.append(script)
            except Exception as error:  # a third-party script's show() is its own code
                logger.exception("script show failed script=%s source=%s", safe_title(script), script.source)
                self.failures.append(f"{safe_title(script)}: {error}")
        return shown

    def add(self, scripts: Iterable[Script]) -> None:
        self.scripts.extend(scripts)
        self._tabs.clear()

    def restore(self, description: Mapping[str, Any]) -> BoundScripts:
        """A job's scripts from ``BoundScripts.describe()`` (a job queued before a restart): the scripts by title in
        this run's catalogue, with their saved arguments (a control added since keeps its default). A selectable
        script that is no longer loaded is a ScriptNotFoundError; an always-on one is left out (logged), and an
        always-on script new since then runs with its defaults."""
        tab = self.tab(bool(description.get("img2img")))
        selected = None
        if description.get("selected"):
            title, args = description["selected"]
            script = tab.by_title(title)
            if script is None or tab.visibility(script) is not Visibility.SELECTABLE:
                raise ScriptNotFoundError(f"Script '{title}' is no longer loaded")
            selected = (script, {**tab.arguments(script), **args})
        given: dict[int, dict[str, Any]] = {}
        for title, args in description.get("always_on") or []:
            script = tab.by_title(title)
            if script is None:
                logger.warning("restored job script missing script=%s", title)
                continue
            given[id(script)] = {**tab.arguments(script), **args}
        return tab.bind(selected, given)


def safe_title(script: Script) -> str:
    try:
        return script.title()
    except Exception:
        return type(script).__name__


@dataclass
class BoundScripts:
    """The scripts of one job with their arguments: processing's ``ScriptHooks``, isolated per script."""

    selected: tuple[Script, Mapping[str, Any]] | None = None
    always_on: list[tuple[Script, ScriptArgs]] = field(default_factory=list)
    is_img2img: bool = False
    failed: set[int] = field(default_factory=set, repr=False)
    defaults: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)  # id(script) -> default arguments

    def changed_always_on(self) -> list[Script]:
        """The always-on scripts given arguments other than their defaults (an enabled ControlNet unit ...); a
        script bound without known defaults counts as changed."""
        return [script for script, args in self.always_on if self.defaults.get(id(script)) != dict(args)]

    def describe(self) -> dict[str, Any]:
        """The scripts by title with their arguments by name (what a restart needs: ``ScriptCatalogue.restore``)."""
        selected = None
        if self.selected is not None:
            script, args = self.selected
            selected = [safe_title(script), dict(args)]
        return {
            "img2img": self.is_img2img,
            "selected": selected,
            "always_on": [[safe_title(script), dict(args)] for script, args in self.always_on],
        }

    def execute(
        self,
        request: GenerationRequest,
        context: ProcessingContext,
        control: JobControl | None = None,
        user: str | None = None,
    ) -> ProcessingResult:
        """The job: the selected script's ``run`` in place of processing, or processing with the hooks."""
        control = control or JobControl(preview_every_n_steps=context.options.show_progress_every_n_steps)
        if self.selected is None:
            return process(request, context, control, user, self)
        script, args = self.selected
        job = ScriptJob(request=request, context=context, control=control, user=user, hooks=self)
        logger.info("script run script=%s", safe_title(script))
        try:
            return script.run(job, args)
        except (ProcessingError, ScriptError) as error:
            raise ProcessingError(f"{safe_title(script)}: {error}") from error
        except Exception as error:  # the script's own code failed: the job fails with its message
            logger.exception("script failed script=%s source=%s", safe_title(script), script.source)
            raise ProcessingError(f"{safe_title(script)} failed: {error}") from error

    def _each(self, run: GenerationRun, hook: str, *arguments: Any) -> None:
        for script, args in self.always_on:
            if id(script) in self.failed:
                continue
            try:
                getattr(script, hook)(run, args, *arguments)
            except ScriptError as error:  # the script refuses the job's arguments: the job fails with its message
                raise ProcessingError(f"{safe_title(script)}: {error}") from error
            except Exception as error:  # a script's own code: isolate it, the job goes on without it
                self.failed.add(id(script))
                title = safe_title(script)
                logger.exception("script hook failed script=%s hook=%s source=%s", title, hook, script.source)
                run.note(f"Script {title} failed in {hook} and was left out: {error}")

    def before_process(self, run: GenerationRun) -> None:
        self._each(run, "before_process")

    def process(self, run: GenerationRun) -> None:
        self._each(run, "process")

    def before_process_batch(self, run: GenerationRun, batch_number: int) -> None:
        self._each(run, "before_process_batch", batch_number)

    def process_batch(self, run: GenerationRun, batch_number: int) -> None:
        self._each(run, "process_batch", batch_number)

    def postprocess_batch(self, run: GenerationRun, images: list[Image.Image], batch_number: int) -> None:
        self._each(run, "postprocess_batch", images, batch_number)

    def postprocess_image(self, run: GenerationRun, image: ImageToPostprocess) -> None:
        self._each(run, "postprocess_image", image)

    def postprocess(self, run: GenerationRun, result: ProcessingResult) -> None:
        self._each(run, "postprocess", result)
        result.notes = list(run.notes)  # a note added by a failing postprocess still reaches the user
