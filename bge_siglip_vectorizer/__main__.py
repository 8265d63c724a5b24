"""``python -m bge_siglip_vectorizer``: the ``bge-siglip`` command."""

import sys

from bge_siglip_vectorizer.cli import main

sys.exit(main())
