"""book/_ext/ddpm_lite_xref.py: a docstring's short reference finds its object; a chapter's unknown one stays broken."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

from docutils import nodes

_spec = importlib.util.spec_from_file_location(
    "ddpm_lite_xref", Path(__file__).resolve().parents[2] / "book" / "_ext" / "ddpm_lite_xref.py")
xref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xref)

OBJECTS = {"ddpm_lite.respace": SimpleNamespace(docname="book/api", node_id="ddpm_lite.respace"),
           "ddpm_lite.sampling.respace_helper": SimpleNamespace(docname="book/api", node_id="x"),
           "ddpm_lite.GaussianDiffusion.q_sample": SimpleNamespace(docname="book/api", node_id="q")}


class Builder:
    def get_relative_uri(self, from_doc, to_doc):
        return "api.html"


def run(target, refdoc):
    env = SimpleNamespace(get_domain=lambda name: SimpleNamespace(objects=OBJECTS))
    node = {"refdomain": "py", "reftarget": target, "refdoc": refdoc}
    contnode = nodes.literal(target, target, classes=["xref", "py", "py-func"])
    return xref.resolve(SimpleNamespace(builder=Builder()), env, node, contnode)


def test_a_short_name_resolves_to_the_documented_object():
    found = run("GaussianDiffusion.q_sample", "book/api")
    assert isinstance(found, nodes.reference) and found["refid"] == "q"  # on the same page: an anchor
    assert run("respace", "book/sampling")["refuri"] == "api.html#ddpm_lite.respace"  # exact suffix, not a prefix


def test_an_undocumented_name_is_plain_code_on_the_api_page_and_stays_broken_in_a_chapter():
    plain = run("torch.allclose", "book/api")
    assert isinstance(plain, nodes.literal) and "xref" not in plain["classes"]
    assert run("smaple", "book/sampling") is None  # Sphinx then renders it unresolved, and the checks fail
