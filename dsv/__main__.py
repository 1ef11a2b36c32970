"""`python -m dsv`."""

from dsv.quick import main

main()
