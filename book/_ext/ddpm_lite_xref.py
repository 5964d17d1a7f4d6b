"""Sphinx extension: the docstrings' short cross-references (:func:`respace`, :meth:`GaussianDiffusion.q_sample`)
find their object in the API reference, wherever autodoc documented it.

ddpm_lite's docstrings name objects as a reader of the code would, relative to nothing in particular; the API
reference documents each object once, under the shortest public path (``ddpm_lite.respace``, not
``ddpm_lite.sampling.respace``). On a missing reference this looks for the one documented object whose full name
ends with the target (the shortest, when several do). On the API page only, a name that is not documented (torch's
``Module``, a private helper) is shown as plain code rather than as a broken link; a chapter's reference must
resolve (.ci/check_html.py and .ci/browser_check.py fail otherwise). Wired in _config.yml (local_extensions).
"""
from docutils import nodes
from sphinx.util.nodes import make_refnode

API_PAGE = "book/api"


def resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    objects = env.get_domain("py").objects
    matches = sorted((name for name in objects if name == target or name.endswith("." + target)), key=len)
    if matches:
        entry = objects[matches[0]]
        return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, matches[0])
    if node["refdoc"] == API_PAGE:
        if isinstance(contnode, nodes.Element):
            contnode["classes"] = [c for c in contnode["classes"] if c != "xref"]
        return contnode
    return None


def setup(app):
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
