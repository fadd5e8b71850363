"""Sphinx configuration for the rewardagg documentation.

Build (offline: nothing is fetched at build time; MathJax is loaded by the reader's browser):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks under ``notebooks/`` are copied into ``docs/notebooks/`` (ignored by git) at the
start of every build and executed by myst-nb, so the site always shows their current outputs.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, installed or not

# The TRL adapter checks the installed TRL version at import; under autodoc TRL is a mock.
os.environ.setdefault("REWARDAGG_SKIP_TRL_VERSION_CHECK", "1")
# Figures in the notebooks: the kernel must use the inline backend even when the caller
# exported MPLBACKEND=Agg (as CI does), or plt.show() would draw nothing.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
# The kernels that execute the notebooks and the code-cell pages import this checkout too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
)

import rewardagg  # noqa: E402


def _copy_notebooks() -> None:
    """Mirror notebooks/*.ipynb into docs/notebooks/ (Sphinx reads sources only under docs/)."""
    dest = DOCS / "notebooks"
    dest.mkdir(exist_ok=True)
    wanted = {p.name: p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    for stale in dest.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name, src in wanted.items():
        target = dest / name
        if not target.exists() or target.read_bytes() != src.read_bytes():
            shutil.copyfile(src, target)


_copy_notebooks()

# -- Project -------------------------------------------------------------------------------

project = "rewardagg"
author = "rewardagg developers"
copyright = "2026, rewardagg developers"
release = rewardagg.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------

extensions = [
    "myst_nb",  # MyST Markdown pages and the notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings are Google style (Args:, Returns:, ...)
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
# Deliberately no sphinx.ext.intersphinx: the build must not touch the network.

# .rst first: autosummary writes its generated stubs (reST) with the first suffix.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "figures", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
language = "en"
pygments_style = "sphinx"
# Quotes only: "--option" and "V[,V...]" in the CLI reference stay as typed (no en dash,
# no ellipsis character).
smartquotes_action = "q"

# -- MyST / myst-nb ------------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The notebooks are committed without outputs, so they are executed at every build. Both
# together run in about 10 s; a cell that takes longer than this fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_in_temp = True  # files a notebook writes land in a temp dir, not in docs/
nb_kernel_rgx_aliases = {".*": "python3"}
nb_merge_streams = True

# -- autodoc / autosummary / napoleon ------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"  # types only where a doc says what
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # dataclass "Attributes:" become :ivar:, no duplicate descriptions
napoleon_use_rtype = False


# The host frameworks are never needed to build the docs: the adapters are documented
# against mocks when a host is not installed. Only the hosts themselves are mocked, and only
# when absent: mocking a package that is installed elsewhere in the stack breaks real imports
# (transformers reads triton.__version__ when triton looks importable), and rewardagg
# imports torch, numba and triton lazily, so autodoc never needs them.
def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# OpenRLHF imports flash_attn (GPU only) at module level; on a CPU machine where it is
# installed with --no-deps (as CI does) it cannot be imported, so it is mocked like an absent
# host. Its GPU dependencies themselves are not mocked: TRL would then see a fake vllm.
# transformers is mocked with TRL when absent: the TRL adapter imports it directly (a
# checkpoint-folder constant), and the docs extra installs neither of them.
autodoc_mock_imports = [
    name
    for name, usable in (
        ("trl", _importable("trl")),
        ("transformers", _importable("transformers")),
        ("verl", _importable("verl")),
        ("openrlhf", _importable("openrlhf") and _importable("flash_attn")),
    )
    if not usable
]

# -- HTML ----------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"rewardagg {release}"
html_static_path = ["_static"]
html_theme_options = {"navigation_with_keys": True}
html_show_sourcelink = False
