"""``python -m pipeline ...`` is the `pearl` command (used to run stages in subprocesses)."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
