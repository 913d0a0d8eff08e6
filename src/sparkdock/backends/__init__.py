"""Cluster backends: the Docker engine (:mod:`.docker`) and local processes (:mod:`.local`)."""

from sparkdock.backends.base import AppResult, Backend, BackendError, ClusterInfo, ComponentHealth, Reporter, StagedApp

__all__ = ["AppResult", "Backend", "BackendError", "ClusterInfo", "ComponentHealth", "Reporter", "StagedApp"]
