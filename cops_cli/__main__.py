"""`python -m cops.cli` runs the command-line interface (as the `cops` script does)."""

from cops.cli.app import main

main()
