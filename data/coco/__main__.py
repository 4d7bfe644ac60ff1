"""python -m data.coco masks|stats ... (data/coco/cli.py)."""
import sys

from data.coco.cli import main

sys.exit(main())
