"""One analytics consumer in a process of its own, for tests that SIGKILL a group member.

    python -m tests.integration.analytics.consumer_process BROKERS DATABASE_URL TOPIC \
        GROUP BATCH_SIZE APPLICATION_NAME
"""

from __future__ import annotations

import asyncio
import sys
from typing import Final

from tests.integration.analytics.conftest import analytics_consumer

VICTIM_APP: Final = "adplatform-analytics-victim"
"""The application name its PostgreSQL connection shows (tests find its transactions)."""


async def main(brokers: str, url: str, topic: str, group: str, batch: str, app: str) -> None:
    consumer = analytics_consumer(brokers, url, topic, group, int(batch), application_name=app)
    await consumer.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:7]))
