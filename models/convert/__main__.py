"""python -m models.convert: see models/convert/__init__.py."""
import sys

from .cli import get_args_parser, main

sys.exit(main(get_args_parser().parse_args()))
