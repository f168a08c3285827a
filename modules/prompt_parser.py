"""A1111-compatible import path: extensions written for A1111 do ``from modules import prompt_parser``.

The implementation lives in modules/prompts/parser.py; this module only re-exports A1111's names.
"""

from modules.prompts import parser as _parser
from modules.prompts.parser import (
    get_learned_conditioning_prompt_schedules,
    get_multicond_prompt_list,
    parse_prompt_attention,
)

# A1111's regular expressions, under A1111's names
re_attention = _parser.ATTENTION_TOKEN
re_break = _parser.BREAK_SPLIT
re_AND = _parser.AND_SEPARATOR  # noqa: N816 (A1111's name)
re_weight = _parser.SUBPROMPT_WEIGHT

__all__ = [
    "get_learned_conditioning_prompt_schedules",
    "get_multicond_prompt_list",
    "parse_prompt_attention",
    "re_AND",
    "re_attention",
    "re_break",
    "re_weight",
]
