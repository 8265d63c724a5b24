"""Ray Data without its console chatter, for runs whose progress we show ourselves (``bge-siglip ingest``) and for
test suites (pytest captures every log record, and Ray Data's driver logs a dict of metrics per operator every few
seconds at DEBUG level)."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator


@contextlib.contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Within the block: no Ray Data progress bars, no per-run "Starting execution" / execution-plan lines, and the
    driver's ``ray.data`` logger at WARNING (its warnings and errors still show; its DEBUG/INFO records, also those
    of its log files under the Ray session directory, are not made). Restored afterwards.

    ``embed_dataset`` and the sinks do not call this: a Ray Data user's own settings apply to their jobs.
    """
    from ray.data import DataContext

    logger = logging.getLogger("ray.data")
    context = DataContext.get_current()
    saved = logger.level, context.enable_progress_bars, context.print_on_execution_start
    logger.setLevel(logging.WARNING)
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        context.enable_progress_bars, context.print_on_execution_start = saved[1], saved[2]
