"""``python -m pathseg_core`` is the ``pathseg`` command."""

from pathseg_core.cli import main

if __name__ == "__main__":
    main()
