"""``python -m smoothapi``: the command line, :func:`smoothapi.cli.main`."""

from smoothapi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
