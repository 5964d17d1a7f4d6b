"""A stand-in for Colab's ``google.colab``, installed only into the Colab simulation's virtual environment.

.ci/colab_sim.py copies this folder into that environment's site-packages, so ``import google.colab`` succeeds
there as it does in Colab, and a chapter's setup cell takes its Colab branch. ``google`` stays a namespace package
(no ``google/__init__.py``), as in Colab, where other distributions share it.
"""

from . import drive

__all__ = ["drive"]
