"""`python -m dsv`."""

from dsv.cli import main

main()
