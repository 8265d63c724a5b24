"""``python -m bge_siglip_tools.bench``: the same as ``bge-siglip bench``."""

import sys

from . import main

if __name__ == "__main__":  # not in a spawned helper process (the server scenario's clients)
    sys.exit(main())
