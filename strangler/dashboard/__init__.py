"""The migration dashboard on the admin listener: one page from package data, its JSON, and the history behind it."""

from .assets import asset
from .sources import DashboardSources
from .view import Dashboard

__all__ = ["Dashboard", "DashboardSources", "asset"]
