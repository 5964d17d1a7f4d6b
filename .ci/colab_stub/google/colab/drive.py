"""A stand-in for ``google.colab.drive``, for the Colab simulation (.ci/colab_sim.py).

In Colab, ``mount`` stops the notebook until the reader authorizes Drive in a pop-up; an unattended run cannot do
that, so here it fails and says so. A chapter should mount Drive only when the reader asks for it.
"""


def mount(mountpoint: str = "/content/drive", force_remount: bool = False, timeout_ms: int = 120000,
          readonly: bool = False) -> None:
    """Fail: the simulation has no Drive (in Colab this waits for the reader to authorize access)."""
    raise RuntimeError(f"google.colab.drive.mount({mountpoint!r}) is a stub in the Colab simulation "
                       "(.ci/colab_sim.py): mount Drive only when the reader asks for it, not in a cell that runs unattended")


def flush_and_unmount(timeout_ms: int = 86400000) -> None:
    """Do nothing: the simulation never mounts Drive."""
