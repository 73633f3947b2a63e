"""`python -m foldkit <command> ...`: the same as the `foldkit` console command (foldkit.cli)."""
from foldkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
