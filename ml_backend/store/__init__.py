"""The backend's own sqlite store, one module per concern; ``Store`` is all of them over one file."""
from __future__ import annotations

from .annotations import Annotations
from .base import Busy, StoreBase, owner_gone, process_alive, process_owner
from .cache import VerdictCache
from .configs import ProjectConfigs
from .events import WebhookEvents
from .jobs import Jobs
from .leases import Leases
from .ledger import Ledger
from .promotions import JudgePromotions
from .review import ReviewQueue

__all__ = ["Busy", "Store", "owner_gone", "process_alive", "process_owner"]


class Store(ProjectConfigs, WebhookEvents, Annotations, VerdictCache, Leases, Ledger, Jobs, ReviewQueue, JudgePromotions,
            StoreBase):
    """Project configs, webhook events, annotations, the verdict cache, leases, the ledger, jobs, the
    review queue and the judge promotions,
    in one sqlite file (WAL, so web workers, job threads and RQ workers on this host share it)."""
