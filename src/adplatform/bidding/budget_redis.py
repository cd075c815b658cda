"""The budget store on Redis: Lua scripts, a single node or a Redis Cluster.

Every key of campaign `c` starts with `adp:{c}:` so all of them share the hash tag
`{c}` and live in one slot: each script touches one campaign and runs atomically on
the node that owns it. Layout:

    adp:{c}:b          hash  s (spent), r (reserved), ds:<day> / dr:<day> (per UTC day)
    adp:{c}:r          hash  reservation id -> "price|day|cap key"
    adp:{c}:x          zset  reservation id by expiry (ms)
    adp:{c}:f:<user>   counter of one user's bids in one frequency-cap window
    adp:{c}:n:<id>     a notice already counted (win, billing, impression, click)
    adp:{c}:s:<rid>    an impression already settled (the first of win/billing); a
                       reservation for it is refused (an exchange repeating a request id)

On a single node one script call reserves a whole batch (all campaigns); on a cluster
the batch is split by campaign and the calls run concurrently (a shard that does not
answer costs its own campaigns' bids, `UNCONFIRMED`, not every campaign's). Expired
reservations are released lazily by every script that touches the campaign, and by
the bidder's sweeper for campaigns it reserved on.

Replication is asynchronous: a master that dies may have acknowledged reservations and
settlements its replica never received, and the promoted replica would let that money
be spent again. With `wait_replicas` (`REDIS_WAIT_REPLICAS`) the reserve and settle
scripts are followed by `WAIT replicas timeout` on the same connection, in the same
round trip (on a cluster, on the node that owns the campaign's slot). What fewer
replicas confirmed in time is not relied on: reservations come back `UNCONFIRMED`
(no-bid; the master's copy is released at once, best effort, else by the timeout) and
a settlement raises
`WriteUnconfirmed` (the notice is answered 503 and retried). Releases, sweeps and
notice markers only ever give money back or de-duplicate, so they do not wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import time
from collections.abc import Sequence
from typing import Any, Final, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adplatform.bidding.budget import (
    KEY_PREFIX,
    BudgetStore,
    BudgetView,
    Reservation,
    ReserveResult,
    Settlement,
    SettleOutcome,
    SettleResult,
    StoreUnavailable,
    WriteUnconfirmed,
)
from adplatform.core.logging import get_logger

log = get_logger(__name__)

SWEEP_LIMIT: Final = 200
"""Most expired reservations one script call releases (bounds a script's run time)."""
ERRORS: Final = (RedisError, RedisClusterException, OSError)
"""What "Redis cannot be reached" looks like (a cluster with an uncovered slot raises
`SlotNotCoveredError`, which is no `RedisError`)."""
TOPOLOGY_REFRESH_SECONDS: Final = 0.5
"""Least time between two re-reads of the cluster's slot map after routing errors."""

_LIB = r"""
local function release_one(kb, kr, rid)
  local v = redis.call('HGET', kr, rid)
  if not v then return 0 end
  local price, day, fkey = string.match(v, '^(%-?%d+)|(%d+)|(.*)$')
  price = tonumber(price)
  redis.call('HINCRBY', kb, 'r', -price)
  redis.call('HINCRBY', kb, 'dr:' .. day, -price)
  if fkey ~= '' and redis.call('EXISTS', fkey) == 1 then
    if redis.call('DECR', fkey) <= 0 then redis.call('DEL', fkey) end
  end
  redis.call('HDEL', kr, rid)
  return 1
end

local function sweep(kb, kr, kx, now, limit)
  local ids = redis.call('ZRANGEBYSCORE', kx, '-inf', now, 'LIMIT', 0, limit)
  local n = 0
  for _, rid in ipairs(ids) do
    n = n + release_one(kb, kr, rid)
    redis.call('ZREM', kx, rid)
  end
  return n
end

local function num(v)
  if v then return tonumber(v) end
  return 0
end
"""

# KEYS: the budget hash `adp:{c}:b` of each reservation; its other keys (`r`, `x`, `f:..`)
# are derived from it, so they carry the same hash tag and live in the same slot.
# ARGV: now_ms, then one packed "rid|price|total|daily_limit|day|expires_ms|cap_limit|
# cap_ttl|cap_key" per reservation (one argument each keeps the client's packing cheap).
RESERVE: Final = (
    _LIB
    + r"""
local now = tonumber(ARGV[1])
local out = {}
local released = 0
local swept = {}
for i = 1, #KEYS do
  local kb = KEYS[i]
  local prefix = string.sub(kb, 1, -2)
  local kr, kx = prefix .. 'r', prefix .. 'x'
  local rid, price, total, dlimit, day, expires, cap_limit, cap_ttl, cap =
    string.match(ARGV[i + 1], '^([^|]*)|(%-?%d+)|(%-?%d+)|(%-?%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(.*)$')
  price, total, dlimit = tonumber(price), tonumber(total), tonumber(dlimit)
  cap_limit = tonumber(cap_limit)
  if not swept[kb] then
    swept[kb] = true
    released = released + sweep(kb, kr, kx, now, 200)
  end
  local code = 1
  if redis.call('HEXISTS', kr, rid) == 1 or redis.call('EXISTS', prefix .. 's:' .. rid) == 1 then
    code = 3
  else
    local v = redis.call('HMGET', kb, 's', 'r', 'ds:' .. day, 'dr:' .. day)
    if num(v[1]) + num(v[2]) + price > total then
      code = 0
    elseif dlimit >= 0 and num(v[3]) + num(v[4]) + price > dlimit then
      code = 4
    else
      local fkey = ''
      if cap_limit > 0 then
        local kf = prefix .. 'f:' .. cap
        if num(redis.call('GET', kf)) >= cap_limit then
          code = 2
        else
          if redis.call('INCR', kf) == 1 then redis.call('EXPIRE', kf, cap_ttl) end
          fkey = kf
        end
      end
      if code == 1 then
        redis.call('HINCRBY', kb, 'r', price)
        redis.call('HINCRBY', kb, 'dr:' .. day, price)
        redis.call('HSET', kr, rid, price .. '|' .. day .. '|' .. fkey)
        redis.call('ZADD', kx, expires, rid)
      end
    end
  end
  out[i] = code
end
out[#KEYS + 1] = released
return out
"""
)

# KEYS: b, r, x, notice marker, settled marker
# ARGV: rid, clearing, total, daily (-1: none), today, ttl, now_ms
# The notice marker holds "<spend of its event>|<first seen, ms>": a duplicate gets both
# back (a marker from before this format reads as 0|0: "not known").
SETTLE: Final = (
    _LIB
    + r"""
local kb, kr, kx = KEYS[1], KEYS[2], KEYS[3]
local rid = ARGV[1]
local amount = tonumber(ARGV[2])
local released = sweep(kb, kr, kx, tonumber(ARGV[7]), 200)
if not redis.call('SET', KEYS[4], '0|' .. ARGV[7], 'NX', 'EX', ARGV[6]) then
  local spent, first = string.match(redis.call('GET', KEYS[4]) or '', '^(%d+)|(%d+)$')
  return {-1, tonumber(spent) or 0, released, tonumber(first) or 0}
end
if redis.call('EXISTS', KEYS[5]) == 1 then return {0, 0, released} end
local v = redis.call('HGET', kr, rid)
local day
if v then
  local price, d = string.match(v, '^(%-?%d+)|(%d+)|')
  price = tonumber(price)
  if amount > price then amount = price end
  redis.call('HINCRBY', kb, 'r', -price)
  redis.call('HINCRBY', kb, 'dr:' .. d, -price)
  redis.call('HDEL', kr, rid)
  redis.call('ZREM', kx, rid)
  day = d
else
  day = ARGV[5]
  local t = redis.call('HMGET', kb, 's', 'r', 'ds:' .. day, 'dr:' .. day)
  if num(t[1]) + num(t[2]) + amount > tonumber(ARGV[3]) then return {2, 0, released} end
  local daily = tonumber(ARGV[4])
  if daily >= 0 and num(t[3]) + num(t[4]) + amount > daily then return {2, 0, released} end
end
redis.call('HINCRBY', kb, 's', amount)
redis.call('HINCRBY', kb, 'ds:' .. day, amount)
redis.call('SET', KEYS[5], amount, 'EX', ARGV[6])
redis.call('SET', KEYS[4], amount .. '|' .. ARGV[7], 'EX', ARGV[6])
return {1, amount, released}
"""
)

# KEYS: b, r, x   ARGV: rid
RELEASE: Final = (
    _LIB
    + r"""
local n = release_one(KEYS[1], KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
"""
)

# KEYS: the budget hash `adp:{c}:b` of each reservation   ARGV: its reservation id
RELEASE_MANY: Final = (
    _LIB
    + r"""
local n = 0
for i = 1, #KEYS do
  local kb = KEYS[i]
  local prefix = string.sub(kb, 1, -2)
  n = n + release_one(kb, prefix .. 'r', ARGV[i])
  redis.call('ZREM', prefix .. 'x', ARGV[i])
end
return n
"""
)

# KEYS: b, r, x per campaign   ARGV: now_ms, limit, oldest day to keep
SWEEP: Final = (
    _LIB
    + r"""
local now, limit, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = 0
for i = 0, #KEYS / 3 - 1 do
  local kb = KEYS[i*3+1]
  n = n + sweep(kb, KEYS[i*3+2], KEYS[i*3+3], now, limit)
  for _, f in ipairs(redis.call('HKEYS', kb)) do
    local d = string.match(f, '^d[sr]:(%d+)$')
    if d and tonumber(d) < keep then redis.call('HDEL', kb, f) end
  end
end
return n
"""
)

DAYS_KEPT: Final = 3
_RESULTS: Final = {int(result): result for result in ReserveResult}


_REROUTE: Final = (
    AskError,
    ClusterDownError,
    TryAgainError,
    RedisConnectionError,
    RedisTimeoutError,
)
"""Replies after which a cluster's slot map may be stale."""


def _prefix(campaign_id: int) -> str:
    return f"{KEY_PREFIX}:{{{campaign_id}}}:"


class _Script:
    """A script called by SHA, loaded on NOSCRIPT (after a restart or failover)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self.sha_bytes = self.sha.encode()

    async def __call__(self, client: Any, numkeys: int, *args: Any) -> Any:
        try:
            return await client.evalsha(self.sha, numkeys, *args)
        except NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, numkeys, *args)


def _pack(*parts: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _RespProtocol(asyncio.Protocol):
    """One RESP2 connection; replies arrive in request order, so waiters are a FIFO."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiters = self._waiters
        while waiters:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            waiter = waiters.popleft()  # a cancelled caller's reply is skipped in order
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Redis connection lost: {exc or 'closed'}"))

    def _fail(self, error: Exception) -> None:
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def close(self, error: Exception | None = None) -> None:
        self._fail(error or RedisConnectionError("Redis connection closed"))
        if self._transport is not None:
            self._transport.close()

    async def call(self, packed: bytes, timeout: float) -> Any:
        if self.closed or self._transport is None:
            raise RedisConnectionError("Redis connection closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._waiters.append(waiter)
        self._transport.write(packed)
        # A timer handle, not `asyncio.wait_for` (a task and a timeout per call).
        timer = loop.call_later(timeout, self._timed_out, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def call_many(self, packed: bytes, count: int, timeout: float) -> list[Any]:
        """`count` commands packed into one write: their replies, in order."""
        if self.closed or self._transport is None:
            raise RedisConnectionError("Redis connection closed")
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(count)]
        self._waiters.extend(waiters)
        self._transport.write(packed)
        timer = loop.call_later(timeout, self._timed_out, waiters[-1])
        try:
            await asyncio.wait(waiters)
        finally:
            timer.cancel()
        # An error reply is a value (hiredis.ReplyError); a lost connection is the
        # futures' exception: every one retrieved, the first raised.
        errors = [error for error in (waiter.exception() for waiter in waiters) if error]
        if errors:
            raise errors[0]
        return [waiter.result() for waiter in waiters]

    def _timed_out(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            # The replies still owed would be out of step: drop the connection.
            self.close(RedisTimeoutError("Redis did not answer in time"))


class ScriptPipe:
    """The reservation script's own connection to a single Redis node.

    redis-py's asyncio command path (streams, a timeout task per call, generic
    argument encoding, pool bookkeeping) cost ~70 µs of CPU per call here, against
    ~10 µs for one pre-packed EVALSHA written to a plain protocol and parsed by hiredis
    (the parser redis-py itself uses). The bid path makes one such call per event-loop
    turn, so it gets this pipelined connection; everything else uses redis-py. Errors
    are redis-py's exception types, so callers handle both alike. A lost connection is
    re-opened by the next call.
    """

    def __init__(self, host: str, port: int, *, password: str | None, timeout: float) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.timeout = timeout
        self._protocol: _RespProtocol | None = None
        self._connecting = asyncio.Lock()

    async def _connection(self) -> _RespProtocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            _, fresh = await asyncio.wait_for(
                loop.create_connection(_RespProtocol, self.host, self.port), self.timeout
            )
            if self.password:
                reply = await fresh.call(_pack(b"AUTH", self.password.encode()), self.timeout)
                if isinstance(reply, hiredis.ReplyError):
                    fresh.close()
                    raise AuthenticationError(str(reply))
            self._protocol = fresh
            return fresh

    async def evalsha(self, script: _Script, keys: list[bytes], args: list[bytes]) -> Any:
        protocol = await self._connection()
        command = _pack(b"EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args)
        reply = await protocol.call(command, self.timeout)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            loaded = await protocol.call(
                _pack(b"SCRIPT", b"LOAD", script.text.encode()), self.timeout
            )
            if isinstance(loaded, hiredis.ReplyError):
                raise ResponseError(str(loaded))
            reply = await protocol.call(command, self.timeout)
        if isinstance(reply, hiredis.ReplyError):
            raise ResponseError(str(reply))
        return reply

    async def evalsha_wait(
        self, script: _Script, keys: list[bytes], args: list[bytes], wait: bytes
    ) -> tuple[Any, int]:
        """The script, then `WAIT` (`wait` is its packed command) on this connection
        in the same write: the reply, and how many replicas acknowledged the write."""
        protocol = await self._connection()
        command = _pack(b"EVALSHA", script.sha_bytes, b"%d" % len(keys), *keys, *args) + wait
        reply, acked = await protocol.call_many(command, 2, self.timeout)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            loaded = await protocol.call(
                _pack(b"SCRIPT", b"LOAD", script.text.encode()), self.timeout
            )
            if isinstance(loaded, hiredis.ReplyError):
                raise ResponseError(str(loaded))
            reply, acked = await protocol.call_many(command, 2, self.timeout)
        for part in (reply, acked):
            if isinstance(part, hiredis.ReplyError):
                raise ResponseError(str(part))
        return reply, int(acked)

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None


class RedisBudgetStore(BudgetStore):
    def __init__(
        self,
        client: Any,
        *,
        cluster: bool,
        max_concurrency: int = 32,
        pipe: ScriptPipe | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 5,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.pipe = pipe
        """Single node: the reservation script's fast connection (None: redis-py)."""
        self.wait_replicas = wait_replicas
        """Replicas the reserve and settle scripts' writes must reach (0: no WAIT)."""
        self.wait_timeout_ms = wait_timeout_ms
        self._wait_packed = _pack(b"WAIT", b"%d" % wait_replicas, b"%d" % wait_timeout_ms)
        self._refreshed_at = 0.0
        self._refresh: asyncio.Task[None] | None = None
        self._unconfirmed_logged_at = 0.0
        self._limit = asyncio.Semaphore(max_concurrency)
        """Bounds concurrent calls below the connection pools' size (a cluster client
        raises rather than waits when a node's pool is exhausted)."""
        self._reserve = _Script(RESERVE)
        self._settle = _Script(SETTLE)
        self._release = _Script(RELEASE)
        self._release_many = _Script(RELEASE_MANY)
        self._background: set[asyncio.Task[None]] = set()
        self._sweep = _Script(SWEEP)

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        cluster: bool = False,
        password: str | None = None,
        timeout: float = 1.0,
        max_connections: int = 64,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 5,
    ) -> RedisBudgetStore:
        """A client that fails fast: one immediate retry (a stale pooled connection),
        then `StoreUnavailable`, so an outage costs a no-bid, not a hung request.
        `wait_replicas`/`wait_timeout_ms`: see the module docstring."""
        retry = Retry(NoBackoff(), 1)
        client: Any
        pipe = None
        if cluster:
            client = RedisCluster(
                startup_nodes=[ClusterNode(host, port)],
                password=password,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=retry,
                max_connections=max_connections,
            )
        else:
            pool = aioredis.BlockingConnectionPool(
                host=host,
                port=port,
                password=password,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=retry,
                max_connections=max_connections,
                timeout=timeout,
                health_check_interval=0,
            )
            client = aioredis.Redis(connection_pool=pool)
            pipe = ScriptPipe(host, port, password=password, timeout=timeout)
        return cls(
            client,
            cluster=cluster,
            max_concurrency=max_connections // 2,
            pipe=pipe,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
        )

    # ------------------------------------------------------------------ WAIT

    async def _eval_wait(self, script: _Script, keys: list[Any], args: list[Any]) -> Any:
        """Run `script`, then WAIT on the same connection in the same round trip; the
        script's reply and how many replicas acknowledged (redis-py connections)."""
        if self.cluster:
            return await self._eval_wait_cluster(script, keys, args)
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                reply, acked = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError) and not attempt:
                await self.client.script_load(script.text)
                continue
            break
        for part in (reply, acked):
            if isinstance(part, Exception):
                raise part
        return reply, int(acked)

    async def _eval_wait_cluster(
        self, script: _Script, keys: list[Any], args: list[Any]
    ) -> tuple[Any, int]:
        # WAIT has no key: redis-py would send it to every shard and on other
        # connections, where it vouches for nothing. Both go down one connection of the
        # node that owns the campaign's slot.
        await self.client.initialize()  # no-op once the slot map is loaded
        node: ClusterNode = self.client.get_node_from_key(keys[0])
        for attempt in range(2):
            commands = [
                PipelineCommand(0, "EVALSHA", script.sha, len(keys), *keys, *args),
                PipelineCommand(1, "WAIT", self.wait_replicas, self.wait_timeout_ms),
            ]
            try:
                await node.execute_pipeline(commands)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                self._refresh_topology()
                raise
            reply, acked = commands[0].result, cast(Any, commands[1].result)
            if isinstance(reply, NoScriptError) and not attempt:
                await node.execute_command("SCRIPT", "LOAD", script.text)
                continue
            break
        for part in (reply, acked):
            if isinstance(part, _REROUTE):
                self._refresh_topology()  # MOVED (an AskError), failover, resharding
            if isinstance(part, Exception):
                raise part
        return reply, int(acked)

    def _refresh_topology(self) -> None:
        """Re-read the cluster's slot map soon (after a failover the slot has a new
        master), at most every `TOPOLOGY_REFRESH_SECONDS`."""
        now = time.monotonic()
        if (self._refresh is not None and not self._refresh.done()) or (
            now - self._refreshed_at < TOPOLOGY_REFRESH_SECONDS
        ):
            return
        self._refreshed_at = now

        async def refresh() -> None:
            try:
                await self.client.nodes_manager.initialize()
            except ERRORS as exc:  # still failing over: the next error retries
                log.debug("redis_topology_refresh_failed", error=str(exc)[:300])

        self._refresh = asyncio.get_running_loop().create_task(refresh())

    def _unconfirmed(self, what: str, acked: int) -> None:
        now = time.monotonic()
        if now - self._unconfirmed_logged_at > 1.0:  # at most a line a second
            self._unconfirmed_logged_at = now
            log.warning(
                "redis_write_unconfirmed",
                what=what,
                replicas_acknowledged=acked,
                replicas_required=self.wait_replicas,
                timeout_ms=self.wait_timeout_ms,
            )

    # ------------------------------------------------------------------ calls

    async def reserve_many(
        self, reservations: Sequence[Reservation], now_ms: int
    ) -> tuple[list[ReserveResult], int]:
        if not reservations:
            return [], 0
        if not self.cluster:
            return await self._reserve_group(reservations, now_ms)
        groups: dict[int, list[int]] = {}
        for position, item in enumerate(reservations):
            groups.setdefault(item.campaign_id, []).append(position)
        parts = await asyncio.gather(
            *(
                self._reserve_group([reservations[p] for p in positions], now_ms)
                for positions in groups.values()
            ),
            return_exceptions=True,
        )
        failures = [part for part in parts if isinstance(part, BaseException)]
        for failure in failures:
            if not isinstance(failure, StoreUnavailable):
                raise failure  # a bug, not an outage: the bid path fails safe on it
        if len(failures) == len(parts):
            raise failures[0]
        # Some shards answered: only the others' campaigns go without a bid.
        results: list[ReserveResult] = [ReserveResult.UNCONFIRMED] * len(reservations)
        released = 0
        for positions, part in zip(groups.values(), parts, strict=True):
            if isinstance(part, BaseException):
                continue
            codes, count = part
            released += count
            for position, code in zip(positions, codes, strict=True):
                results[position] = code
        return results, released

    async def _reserve_group(
        self, reservations: Sequence[Reservation], now_ms: int
    ) -> tuple[list[ReserveResult], int]:
        keys = [f"{KEY_PREFIX}:{{{item.campaign_id}}}:b".encode() for item in reservations]
        args = [
            f"{r.rid}|{r.price}|{r.total_budget}|{r.daily_limit}|{r.day}|{r.expires_ms}|"
            f"{r.cap_limit if r.cap_key else 0}|{r.cap_ttl}|{r.cap_key or ''}".encode()
            for r in reservations
        ]
        acked = self.wait_replicas
        try:
            if not acked:
                if self.pipe is not None:
                    raw = await self.pipe.evalsha(self._reserve, keys, [b"%d" % now_ms, *args])
                else:
                    async with self._limit:
                        raw = await self._reserve(self.client, len(keys), *keys, now_ms, *args)
            elif self.pipe is not None:
                raw, acked = await self.pipe.evalsha_wait(
                    self._reserve, keys, [b"%d" % now_ms, *args], self._wait_packed
                )
            else:
                async with self._limit:
                    raw, acked = await self._eval_wait(self._reserve, keys, [now_ms, *args])
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        codes = [_RESULTS[code] for code in raw[:-1]]
        if acked < self.wait_replicas:
            self._unconfirmed("reservations", acked)
            held = [i for i, code in enumerate(codes) if code is ReserveResult.RESERVED]
            for i in held:
                codes[i] = ReserveResult.UNCONFIRMED
            if held:
                self._spawn(self._give_back([keys[i] for i in held], [args[i] for i in held]))
        return codes, int(raw[-1])

    async def _give_back(self, keys: list[bytes], packed: list[bytes]) -> None:
        """Release reservations nobody bids on (unconfirmed) at once, best effort: the
        master that holds them usually lives on (a replica lagged), and their money
        would otherwise be tied up for the whole reservation timeout."""
        rids = [item.split(b"|", 1)[0] for item in packed]
        try:
            if self.pipe is not None:
                await self.pipe.evalsha(self._release_many, keys, rids)
            else:
                async with self._limit:
                    await self._release_many(self.client, len(keys), *keys, *rids)
        except ERRORS as exc:  # unreachable: they expire as usual
            log.debug("unconfirmed_release_failed", error=str(exc)[:300])

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self, settlement: Settlement, now_ms: int) -> SettleOutcome:
        prefix = _prefix(settlement.campaign_id)
        keys = [
            prefix + "b",
            prefix + "r",
            prefix + "x",
            prefix + "n:" + settlement.notice_id,
            prefix + "s:" + settlement.rid,
        ]
        args = [
            settlement.rid,
            settlement.clearing,
            settlement.total_budget,
            settlement.daily_budget,
            settlement.day,
            settlement.ttl,
            now_ms,
        ]
        acked = self.wait_replicas
        try:
            async with self._limit:
                if acked:
                    raw, acked = await self._eval_wait(self._settle, keys, args)
                else:
                    raw = await self._settle(self.client, len(keys), *keys, *args)
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        outcome = SettleOutcome(
            SettleResult(int(raw[0])), int(raw[1]), int(raw[3]) if len(raw) > 3 else 0
        )
        self.last_released = int(raw[2])
        if acked < self.wait_replicas:
            self._unconfirmed("settlement", acked)
            raise WriteUnconfirmed(
                f"Redis: settlement reached {acked} of {self.wait_replicas} replicas "
                f"within {self.wait_timeout_ms} ms",
                outcome,
            )
        return outcome

    last_released: int = 0
    """Expired reservations the last settle call released (for the metric)."""

    async def release(self, campaign_id: int, rid: str) -> bool:
        prefix = _prefix(campaign_id)
        try:
            async with self._limit:
                raw = await self._release(
                    self.client, 3, prefix + "b", prefix + "r", prefix + "x", rid
                )
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return bool(int(raw))

    async def release_expired(self, campaign_ids: Sequence[int], now_ms: int) -> int:
        keep = now_ms // 86_400_000 - DAYS_KEPT
        # One call per chunk of campaigns on a single node; one per campaign (slot)
        # on a cluster.
        chunk = 1 if self.cluster else 200
        groups = [campaign_ids[i : i + chunk] for i in range(0, len(campaign_ids), chunk)]

        async def one(group: Sequence[int]) -> int:
            keys: list[str] = []
            for campaign_id in group:
                prefix = _prefix(campaign_id)
                keys += (prefix + "b", prefix + "r", prefix + "x")
            released = 0
            while True:  # a call releases at most SWEEP_LIMIT per campaign: again
                async with self._limit:  # until no campaign can have had more
                    raw = await self._sweep(
                        self.client, len(keys), *keys, now_ms, SWEEP_LIMIT, keep
                    )
                released += int(raw)
                if int(raw) < SWEEP_LIMIT:
                    return released

        try:
            counts = await asyncio.gather(*(one(group) for group in groups))
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        return sum(counts)

    async def mark_once(
        self, campaign_id: int, notice_id: str, ttl: int, now_ms: int
    ) -> int | None:
        try:
            async with self._limit:
                # NX with GET (Redis 7.0+): one round trip sets the marker or reads the
                # one already there.
                prior = await self.client.set(
                    _prefix(campaign_id) + "n:" + notice_id, now_ms, nx=True, ex=ttl, get=True
                )
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        if prior is None:
            return None
        text = prior.decode() if isinstance(prior, bytes) else str(prior)
        return int(text) if text.isdigit() else 0  # a marker from before this holds 1: long ago

    async def view(self, campaign_id: int, day: int) -> BudgetView:
        prefix = _prefix(campaign_id)
        try:
            async with self._limit:
                values = await self.client.hmget(prefix + "b", ["s", "r", f"ds:{day}", f"dr:{day}"])
                count = await self.client.hlen(prefix + "r")
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        spent, reserved, day_spent, day_reserved = (int(v or 0) for v in values)
        return BudgetView(spent, reserved, day_spent, day_reserved, int(count))

    async def ping(self) -> None:
        try:
            async with self._limit:
                await self.client.ping()
        except ERRORS as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._refresh is not None:
            self._refresh.cancel()
        with contextlib.suppress(*ERRORS):  # already gone: nothing to release
            await self.client.aclose()
