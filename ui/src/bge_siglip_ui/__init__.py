"""``bge-siglip ui``: a search page for a folder of images or a Chroma / Qdrant / Milvus / LanceDB collection, served
on this machine.

    bge-siglip ui --model my-model --folder ~/Pictures
    bge-siglip ui --model my-model --store qdrant:./qdrant#photos

In Python: ``bge_siglip_ui.app.UIState(bge_siglip_ui.command.UIOptions(model=..., folder=...))`` and
``bge_siglip_ui.app.create_app(state)`` give the FastAPI application; ``bge_siglip_ui.server.serve`` runs it. This
module imports nothing itself, so ``bge-siglip --help`` (which loads the command) imports no web stack.
"""

__version__ = "0.1.0"
