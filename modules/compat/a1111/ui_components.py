"""A1111's ``modules.ui_components``: the small Gradio widgets extensions build their UIs with."""

from __future__ import annotations

from typing import Any

import gradio as gr


class GradioWidget:
    """Renders with the Gradio class it extends: the browser picks a component by the class name, so a subclass
    named ``FormRow`` must say "row" (as A1111's ``FormComponent.get_block_name`` does)."""

    def get_block_name(self) -> str:
        gradio_class = next(base for base in type(self).__mro__ if base.__module__.startswith("gradio."))
        return gradio_class.__name__.lower()


class ToolButton(GradioWidget, gr.Button):
    """A small button with an icon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)


class FormRow(GradioWidget, gr.Row):
    pass


class FormColumn(GradioWidget, gr.Column):
    pass


class FormGroup(GradioWidget, gr.Group):
    pass


class FormHTML(GradioWidget, gr.HTML):
    pass


class ResizeHandleRow(GradioWidget, gr.Row):
    pass


class DropdownMulti(GradioWidget, gr.Dropdown):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(multiselect=True, **kwargs)


class DropdownEditable(GradioWidget, gr.Dropdown):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_custom_value=True, **kwargs)


class InputAccordion(GradioWidget, gr.Checkbox):
    """A1111's accordion whose open state is a checkbox value: here a checkbox, usable as ``with`` block."""

    def __init__(self, value: bool, **kwargs: Any) -> None:
        label = kwargs.pop("label", "")
        kwargs.pop("open", None)
        super().__init__(value=value, label=label, **kwargs)
        self.accordion = gr.Accordion(label, open=bool(value))

    def __enter__(self) -> InputAccordion:
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.accordion.__exit__(*exc)
