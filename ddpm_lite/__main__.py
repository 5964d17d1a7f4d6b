"""``python -m ddpm_lite`` is the ``ddpm-lite`` command (and what ``torchrun -m ddpm_lite train ...`` runs)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
