"""``python -m tumorscope.cli``: the console script."""

from tumorscope.cli import main

main()
