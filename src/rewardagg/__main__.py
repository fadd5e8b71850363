"""``python -m rewardagg``: the same as the ``rewardagg`` command."""

from rewardagg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
