"""`python -m bluegreen` is the same as the `upgrade` command."""

from bluegreen.cli import main

if __name__ == "__main__":
    main()
