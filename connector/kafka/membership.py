"""Static group membership that is kept through a crash and given up on a stop.

With a group instance id (KIP-345, ``CONNECTOR_KAFKA__STATIC_MEMBERSHIP``), a worker
killed and started again under the same id within the session timeout gets its partitions
back without a rebalance (a crashed StatefulSet pod, a Compose container restarted by its
policy). But aiokafka never sends LeaveGroup for a static member, not even when it stops
or when its poll interval expires: a worker stopped for good (scaled down, the group's
other workers taking over) would keep its partitions silent for a whole session timeout.

:func:`leave_on_stop` makes the consumer's coordinator leave as a dynamic member does: a
LeaveGroup with its member id, which the broker honours for a static member too (Kafka
4.4: the others are rebalanced at once, ``tests/kafka/test_membership.py``). Only a crash
keeps the membership, which is what it is for.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

__all__ = ["leave_on_stop"]

logger = logging.getLogger(__name__)


def leave_on_stop(client: Any) -> None:
    """From now on, the started ``client`` (AIOKafkaConsumer) leaves its group when it stops."""
    coordinator = getattr(client, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "_group_instance_id", None) is None:
        return  # no group, or dynamic: aiokafka leaves by itself
    # Replaces the coordinator's "leave unless static" step, which its close() and its
    # poll-interval check await.
    coordinator._maybe_leave_group = functools.partial(_leave, coordinator)


async def _leave(coordinator: Any) -> None:
    if coordinator.generation > 0:
        # A best effort, as aiokafka's own: no retry; the session timeout is the fallback.
        request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
        try:
            await coordinator._send_req(request)
        except KafkaError as exc:
            logger.warning("leaving group %s failed: %s", coordinator.group_id, exc)
        else:
            logger.info(
                "left group %s (static member %s)",
                coordinator.group_id,
                coordinator._group_instance_id,
            )
    coordinator.reset_generation()
