"""Sphinx extension: every page of the book says which ddpm_lite built it, in the footer.

The version is read from the package at build time (ddpm_lite.__version__), so the line cannot go stale;
.ci/browser_check.py asserts it on every chapter. Wired in _config.yml under sphinx: local_extensions.
"""
import ddpm_lite

VERSION_LINE = "Built with ddpm_lite {version}"  # .ci/browser_check.py looks for this exact line


def add_version_to_footer(app, config) -> None:
    """Append the line to sphinx-book-theme's extra_footer (kept if _config.yml sets one)."""
    line = VERSION_LINE.format(version=ddpm_lite.__version__)
    options = config.html_theme_options
    options["extra_footer"] = f'{options.get("extra_footer", "")}<p class="ddpm-lite-version">{line}</p>'


def setup(app):
    app.connect("config-inited", add_version_to_footer)
    return {"version": ddpm_lite.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
