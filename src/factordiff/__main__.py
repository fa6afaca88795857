"""``python -m factordiff`` == the ``factordiff`` command."""

from factordiff.cli import main

main()
