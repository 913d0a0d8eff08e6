"""ipywidgets panels of sparkdock, live from the event stream.

* :class:`ClusterPanel`: launch interactive clusters and watch each come up;
* :class:`JobSubmitPanel`: submit automated jobs;
* :class:`JobMonitor`: every job, its history and its logs;
* :class:`JobCard`: the live status card of one job (what a job handle shows in a cell).
"""

from __future__ import annotations

from sparkdock.notebook.widgets.card import JobCard
from sparkdock.notebook.widgets.panels import ClusterPanel, JobMonitor, JobSubmitPanel

__all__ = ["ClusterPanel", "JobCard", "JobMonitor", "JobSubmitPanel"]
