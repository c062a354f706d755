"""Replicas sharing one store: each account checked by one replica at a time, held by
a lease, and the accounts spread evenly over the live replicas."""
