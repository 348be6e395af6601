"""Entry point: `python train.py [overrides]` (see README)."""

from wattwise.train import main

if __name__ == "__main__":
    main()
