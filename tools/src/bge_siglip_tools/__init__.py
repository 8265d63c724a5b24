"""Tools around BGE-SigLIP that are not part of the library a user installs: the offline end-to-end demo
(``bge-siglip demo``) and the benchmark harness (``bge-siglip bench``).

They depend on the core and on the database adapters they exercise; the core depends on none of them. Both
commands reach the one ``bge-siglip`` command through the ``bge_siglip.commands`` entry-point group
(:mod:`.commands`).
"""

__version__ = "0.1.0"
