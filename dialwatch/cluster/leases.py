"""Keeping this replica's share of the account leases.

Every tick a replica says it is alive, renews the leases it holds, and then takes or
gives back leases so that it holds about its share: the accounts divided by the live
replicas, rounded up. A replica that stops renewing (killed, paused, cut off) loses its
leases when they expire, and the others take its accounts at their next tick; one that
stops cleanly gives them back at once. Times are the database's, so replicas' clocks
need not agree.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from dialwatch.store import Store


@dataclass(frozen=True)
class Share:
    """What one tick decided: the leases kept (account -> token) and the accounts to
    give back once their checks have stopped."""

    held: dict[str, int]
    surplus: tuple[str, ...]
    replicas: int


def _spread(replica: str, account: str) -> str:
    """A stable order that differs per replica, so replicas reaching for free accounts
    at once mostly reach for different ones."""
    return hashlib.blake2b(f"{replica}/{account}".encode(), digest_size=8).hexdigest()


@dataclass
class LeaseKeeper:
    store: Store
    replica: str
    ttl: timedelta

    async def tick(self, accounts: Sequence[str]) -> Share:
        """Renew, then take or give back leases toward this replica's share."""
        await self.store.heartbeat(self.replica)
        live = await self.store.replicas(seen_within=self.ttl)
        renewed = await self.store.renew_leases(self.replica, self.ttl)
        wanted = set(accounts)
        held = {a: token for a, token in renewed.items() if a in wanted}
        gone = tuple(a for a in renewed if a not in wanted)  # removed from the rules
        share = math.ceil(len(wanted) / max(1, len(live)))
        if len(held) > share:
            ordered = sorted(held, key=lambda a: _spread(self.replica, a))
            surplus = tuple(ordered[share:])
            return Share({a: held[a] for a in ordered[:share]}, gone + surplus, len(live))
        if len(held) < share:
            free = await self.store.free_accounts(sorted(wanted - set(held)))
            chosen = sorted(free, key=lambda a: _spread(self.replica, a))[: share - len(held)]
            if chosen:
                held |= await self.store.acquire_leases(self.replica, chosen, self.ttl)
        return Share(held, gone, len(live))

    async def give_back(self, accounts: Sequence[str]) -> None:
        if accounts:
            await self.store.release_leases(self.replica, accounts)

    async def leave(self) -> None:
        """Give back every lease and leave the cluster (on a clean stop)."""
        await self.store.leave(self.replica)
