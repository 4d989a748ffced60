"""One backend's current run of failures, and how much of it may count towards ejecting the backend.

Passive ejection must not be steerable by one tenant: a crafted payload can make a shared backend answer 500,
drop the connection or stall, so each tenant's failures count at most ``per_tenant_cap`` times per streak
(half the ejection threshold, rounded up: failures from at least two tenants eject). A failure no payload can
cause (the TCP connect itself was refused) is charged to no tenant and counts in full. ``total`` still reports
the whole streak, for the admin API.
"""

from __future__ import annotations


class FailureStreak:
    __slots__ = ("by_tenant", "counted", "total")

    def __init__(self) -> None:
        self.total = 0
        self.counted = 0  # the failures that count towards ejection (each tenant's share capped)
        self.by_tenant: dict[str, int] = {}  # tenant -> its failures in this streak

    def add(self, tenant_id: str | None, per_tenant_cap: int) -> int:
        """Record one failure; return how many of the streak's failures now count towards ejection."""
        self.total += 1
        if tenant_id is None:
            self.counted += 1
        else:
            seen = self.by_tenant.get(tenant_id, 0)
            self.by_tenant[tenant_id] = seen + 1
            if seen < per_tenant_cap:
                self.counted += 1
        return self.counted

    def reset(self) -> None:
        self.total = 0
        self.counted = 0
        self.by_tenant.clear()
