"""``python -m mlcli``."""

from mlcli.cli import main

if __name__ == "__main__":
    main()
