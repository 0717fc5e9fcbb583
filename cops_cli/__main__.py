"""`python -m cops` runs the command-line interface."""

from cops.app import main

main()
