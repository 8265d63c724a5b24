"""``python -m bge_siglip_vectorizer.bench``: the same as ``bge-siglip bench``."""

import sys

from . import main

sys.exit(main())
