"""``python -m distil.cli``."""

from distil.cli.app import main

main()
