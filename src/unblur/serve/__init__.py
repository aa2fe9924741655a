"""``unblur serve``: a FastAPI application over ``unblur.runs`` with one static page (the
``serve`` extra: fastapi and uvicorn). ``app.create_app`` builds it from ``schemas`` (the
requests and their ``Limits``), ``routes`` (the endpoints), ``describe`` (what the page knows of a
run), ``previews`` (live previews and outputs) and ``jobs`` (the bounded queue)."""

from .app import create_app
from .jobs import Cancelled, Job, JobQueue, QueueFull
from .schemas import Limits

__all__ = ["Cancelled", "Job", "JobQueue", "Limits", "QueueFull", "create_app"]
