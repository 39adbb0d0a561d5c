"""Tensor parallelism on MLX's distributed backends (ring over TCP, JACCL over RDMA): every rank
holds 1/world of each layer and runs the whole graph; see plan.py for what is split and how."""

from .collective import Collectives, Watchdog
from .errors import (EXIT_COLLECTIVE_FAILED, EXIT_COLLECTIVE_TIMEOUT, CollectiveFailed, CollectiveTimeout,
                     ShardError, TPError, exit_code)
from .load import load_sharded
from .plan import ShardPlan

__all__ = ["Collectives", "Watchdog", "ShardPlan", "load_sharded", "ShardError", "TPError", "CollectiveFailed",
           "CollectiveTimeout", "exit_code", "EXIT_COLLECTIVE_FAILED", "EXIT_COLLECTIVE_TIMEOUT"]
