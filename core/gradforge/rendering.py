"""Jinja2 environments for backend templates (one cached environment per package).

Strict by default (``StrictUndefined``: a typo in a template is an error, not an empty
string), with ``trim_blocks``/``lstrip_blocks`` so control lines leave no blank lines and
``keep_trailing_newline`` so files end with exactly one newline.
"""
from __future__ import annotations

import functools

import jinja2


@functools.lru_cache(maxsize=None)
def environment(package: str, folder: str = "templates") -> jinja2.Environment:
    """The template environment of ``package`` (templates shipped as package data)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, folder),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(package: str, template: str, **context) -> str:
    """Render ``template`` from ``package``; trailing spaces are stripped from every line."""
    text = environment(package).get_template(template).render(**context)
    return "\n".join(line.rstrip() for line in text.split("\n"))
