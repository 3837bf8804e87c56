"""Each script of a page once.

sphinx-thebe 0.3 registers its inline configuration script (``const THEBE_JS_URL = ...``) twice
under Sphinx 7 (once with the file name ``None``, once ``""``), and the second ``const`` is a
SyntaxError in every page's console. Loaded by ``sphinx: local_extensions`` in ``_config.yml``.
"""

from __future__ import annotations


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or "", sorted(attributes.items()))
        if repr(key) not in seen:
            seen.add(repr(key))
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    # after every extension that adds scripts to the page (default priority 500)
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
