"""The warehouse views each stage derives from its marts, named in one list.

`lake.warehouse.register_views` creates one view per lake dataset by itself; the views that join or
reduce a stage's marts (the latest signal values, the action-queue rows that point at a gap) belong to the
stage that knows them. The lake is imported by the stages, so it does not import them: it takes this list.
A stage that adds a warehouse view adds its function here: `fn(con, settings) -> [view names]`.
"""

from __future__ import annotations

from feedback_loop.gaps.mart import register_gap_views
from feedback_loop.review.approvals import register_approval_views
from feedback_loop.signals.metrics import register_signal_views

PROVIDERS = (register_signal_views, register_gap_views, register_approval_views)
