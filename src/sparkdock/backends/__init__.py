"""Cluster backends: the Docker engine (:mod:`.docker`) and local processes (:mod:`.local`)."""

from .base import AppResult, Backend, BackendError, ClusterInfo, Reporter, StagedApp

__all__ = ["AppResult", "Backend", "BackendError", "ClusterInfo", "Reporter", "StagedApp"]
