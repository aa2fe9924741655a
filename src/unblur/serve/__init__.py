"""``unblur serve``: a FastAPI application over ``unblur.runs`` with one static page (the
``serve`` extra: fastapi and uvicorn)."""

from .app import Limits, create_app
from .jobs import Cancelled, Job, JobQueue, QueueFull

__all__ = ["Cancelled", "Job", "JobQueue", "Limits", "QueueFull", "create_app"]
