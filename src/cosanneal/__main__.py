"""``python -m cosanneal``: the same as the ``cosanneal`` command."""

from cosanneal.cli import main

if __name__ == "__main__":
    main()
