"""``python -m byzer_like.cli``: the same as the ``byzer-like`` command."""

from byzer_like.cli import main

main()
