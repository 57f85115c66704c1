"""Fault injection for the sandbox servers.

A :class:`FaultInjector` holds an ordered list of rules (:class:`FaultSpec`) and a
global latency. For every vendor request the server asks :meth:`FaultInjector.decide`
what to do with it; the answer is ``None`` (serve normally) or a :class:`Fault`.

Rule semantics:

- ``target`` matches the Kombo integration id or the Comeet evaluation id; ``None``
  matches every request.
- ``count`` limits a rule to the next N *matching* requests ("the next 3 requests
  fail"); the rule is removed once spent. ``probability`` (0..1) makes a rule fire
  on a random share of matching requests; give ``seed`` for a reproducible
  sequence (otherwise the injector-wide RNG is used, itself seedable).
- Kinds: ``error`` (an HTTP status, default 503, optional vendor error code),
  ``rate_limit`` (429 with a ``Retry-After`` header in whole seconds; with ``per_s`` it
  is the vendor's rate limit, below), ``latency``
  (delay only, the request is then served normally), ``drop`` (the connection is
  closed without a response) and ``outage`` (every matching request answers 503
  for ``duration_s`` seconds from when the rule is added, then the rule expires).
- ``latency_ms`` may be set on any kind: the answer is delayed by that much.
- A ``rate_limit`` rule with ``per_s`` enforces a rate: every target (integration or
  evaluation id) has its own token bucket of ``per_s`` tokens a second holding at most
  ``burst`` (default: one second's worth), a request within it takes a token and is
  served, a request beyond it answers 429. ``count`` then counts the 429s. The request
  log shows them (``status_code`` 429), so a test counts what went over the limit.
- All matching latency is added up; the first matching terminal rule (error,
  rate_limit, drop, outage) wins and later terminal rules are not consumed.

Faults are decided before any vendor check (auth, validation, state): they model
the vendor's infrastructure failing, so even a request with a bad key can be
dropped. A faulted request is recorded (with the status answered, or "dropped") and
never changes vendor state.

The global latency (``set_latency``) is added to every vendor request; the
benchmark uses it to model a remote API's round trip.

Hot path: with no rules :meth:`decide` is one attribute test, so an idle injector
costs nothing measurable.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultSpec",
]

logger = logging.getLogger(__name__)

FaultKind = Literal["error", "rate_limit", "latency", "drop", "outage"]

_TERMINAL_KINDS = frozenset({"error", "rate_limit", "drop", "outage"})


class FaultSpec(BaseModel):
    """One fault rule, as given through the Python API or ``POST /_sandbox/faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    target: str | None = Field(
        default=None, description="integration id (Kombo) / evaluation id (Comeet); None = any"
    )
    status: int | None = Field(default=None, ge=400, le=599)
    code: str | None = Field(default=None, description="Kombo error code; ignored by Comeet")
    message: str | None = None
    retry_after_s: int | None = Field(default=None, ge=0, description="Retry-After header")
    latency_ms: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    count: int | None = Field(default=None, ge=1)
    probability: float = Field(default=1.0, ge=0, le=1)
    seed: int | None = None
    duration_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    per_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="rate_limit: allowed requests/s"
    )
    burst: int | None = Field(default=None, ge=1, description="rate_limit with per_s: bucket")

    @model_validator(mode="after")
    def _fits_kind(self) -> FaultSpec:
        kind = self.kind
        if kind == "latency" and self.latency_ms <= 0:
            raise ValueError("latency_ms: must be > 0 for a latency fault")
        if kind == "outage" and self.duration_s is None:
            raise ValueError("duration_s: required for an outage")
        if kind != "outage" and self.duration_s is not None:
            raise ValueError("duration_s: only allowed for an outage")
        if kind == "rate_limit" and self.status not in (None, 429):
            raise ValueError("status: a rate_limit fault always answers 429")
        if kind != "rate_limit" and (self.per_s is not None or self.burst is not None):
            raise ValueError("per_s/burst: only allowed for a rate_limit fault")
        if self.burst is not None and self.per_s is None:
            raise ValueError("burst: needs per_s")
        if kind in ("latency", "drop") and (
            self.status is not None or self.code is not None or self.retry_after_s is not None
        ):
            raise ValueError(f"status/code/retry_after_s: not allowed for a {kind} fault")
        return self

    @property
    def effective_status(self) -> int | None:
        """The HTTP status this rule answers with (None: no answer of its own)."""
        if self.kind == "rate_limit":
            return 429
        if self.kind in ("error", "outage"):
            return self.status or 503
        return None


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do with one request. ``status`` None and ``drop`` False: only delay it."""

    kind: FaultKind
    rule_id: str | None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after_s: int | None = None
    delay_s: float = 0.0
    drop: bool = False


class _Rule:
    """A spec plus its runtime state; kept flat for the per-request loop."""

    __slots__ = (
        "buckets",
        "expires_at",
        "fault",
        "id",
        "meter",
        "probability",
        "remaining",
        "rng",
        "spec",
        "target",
        "terminal",
    )

    def __init__(self, rule_id: str, spec: FaultSpec, rng: random.Random) -> None:
        self.id = rule_id
        self.spec = spec
        self.target = spec.target
        self.remaining = spec.count
        self.probability = spec.probability
        self.rng = random.Random(spec.seed) if spec.seed is not None else rng
        self.terminal = spec.kind in _TERMINAL_KINDS
        # (per_s, burst) of an enforced rate, and each target's (tokens, as of when).
        self.meter = (
            None if spec.per_s is None else (spec.per_s, float(spec.burst or max(1, spec.per_s)))
        )
        self.buckets: dict[str | None, tuple[float, float]] = {}
        self.expires_at = (
            time.monotonic() + spec.duration_s if spec.duration_s is not None else None
        )
        retry_after = spec.retry_after_s
        if spec.kind == "rate_limit" and retry_after is None:
            retry_after = 1
        # Built once: most requests that hit a rule reuse this very object.
        self.fault = Fault(
            kind=spec.kind,
            rule_id=rule_id,
            status=spec.effective_status,
            code=spec.code,
            message=spec.message,
            retry_after_s=retry_after,
            delay_s=spec.latency_ms / 1000.0,
            drop=spec.kind == "drop",
        )

    def within_rate(self, target: str | None, now: float) -> bool:
        """Take a token of ``target``'s bucket if it has one (an enforced rate only)."""
        assert self.meter is not None
        per_s, burst = self.meter
        tokens, since = self.buckets.get(target, (burst, now))
        tokens = min(burst, tokens + (now - since) * per_s)
        if tokens >= 1.0 - 1e-9:  # float sums of per_s * elapsed fall short by ulps
            self.buckets[target] = (tokens - 1.0, now)
            return True
        self.buckets[target] = (tokens, now)
        return False

    def describe(self, now: float) -> dict[str, Any]:
        out = self.spec.model_dump()
        out["id"] = self.id
        out["remaining"] = self.remaining
        out["expires_in_s"] = None if self.expires_at is None else max(0.0, self.expires_at - now)
        return out


class FaultInjector:
    """The fault rules and global latency of one sandbox server."""

    def __init__(self, *, latency_ms: float = 0.0, seed: int | None = None) -> None:
        self._rules: list[_Rule] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)
        self.latency_s = 0.0
        self.set_latency(latency_ms)

    # -- global latency -------------------------------------------------------------

    @property
    def latency_ms(self) -> float:
        return self.latency_s * 1000.0

    def set_latency(self, ms: float) -> None:
        """Delay every vendor request by ``ms`` milliseconds (0 = off)."""
        if isinstance(ms, bool) or not (
            isinstance(ms, int | float) and math.isfinite(ms) and ms >= 0
        ):
            raise ValueError(f"latency must be a finite number of ms >= 0, got {ms!r}")
        self.latency_s = float(ms) / 1000.0

    # -- rules ------------------------------------------------------------------------

    def add(self, spec: FaultSpec) -> str:
        """Add a rule; returns its id (for :meth:`remove`)."""
        rule_id = f"f{next(self._ids)}"
        self._rules.append(_Rule(rule_id, spec, self._rng))
        logger.debug("fault %s added: %s", rule_id, spec)
        return rule_id

    def add_error(
        self,
        status: int = 503,
        code: str | None = None,
        *,
        target: str | None = None,
        count: int | None = None,
        probability: float = 1.0,
        seed: int | None = None,
        message: str | None = None,
        retry_after_s: int | None = None,
        latency_ms: float = 0.0,
    ) -> str:
        return self.add(
            FaultSpec(
                kind="error",
                status=status,
                code=code,
                target=target,
                count=count,
                probability=probability,
                seed=seed,
                message=message,
                retry_after_s=retry_after_s,
                latency_ms=latency_ms,
            )
        )

    def add_rate_limit(
        self,
        retry_after_s: int = 1,
        *,
        code: str | None = None,
        target: str | None = None,
        count: int | None = None,
        probability: float = 1.0,
        seed: int | None = None,
        message: str | None = None,
        per_s: float | None = None,
        burst: int | None = None,
    ) -> str:
        """429s: every matching request, or with ``per_s`` only those above that rate."""
        return self.add(
            FaultSpec(
                kind="rate_limit",
                retry_after_s=retry_after_s,
                code=code,
                target=target,
                count=count,
                probability=probability,
                seed=seed,
                message=message,
                per_s=per_s,
                burst=burst,
            )
        )

    def add_latency(
        self,
        ms: float,
        *,
        target: str | None = None,
        count: int | None = None,
        probability: float = 1.0,
        seed: int | None = None,
    ) -> str:
        return self.add(
            FaultSpec(
                kind="latency",
                latency_ms=ms,
                target=target,
                count=count,
                probability=probability,
                seed=seed,
            )
        )

    def add_drop(
        self,
        *,
        target: str | None = None,
        count: int | None = None,
        probability: float = 1.0,
        seed: int | None = None,
        latency_ms: float = 0.0,
    ) -> str:
        return self.add(
            FaultSpec(
                kind="drop",
                target=target,
                count=count,
                probability=probability,
                seed=seed,
                latency_ms=latency_ms,
            )
        )

    def add_outage(
        self,
        duration_s: float,
        *,
        target: str | None = None,
        status: int = 503,
        code: str | None = None,
        message: str | None = None,
        retry_after_s: int | None = None,
    ) -> str:
        return self.add(
            FaultSpec(
                kind="outage",
                duration_s=duration_s,
                target=target,
                status=status,
                code=code,
                message=message,
                retry_after_s=retry_after_s,
            )
        )

    def remove(self, rule_id: str) -> bool:
        for i, rule in enumerate(self._rules):
            if rule.id == rule_id:
                del self._rules[i]
                return True
        return False

    def clear(self) -> int:
        """Remove every rule (the global latency stays); returns how many were removed."""
        removed = len(self._rules)
        self._rules = []
        return removed

    def rules(self) -> list[dict[str, Any]]:
        """The live rules, JSON-ready (expired and spent rules are gone)."""
        now = time.monotonic()
        self._prune(now)
        return [rule.describe(now) for rule in self._rules]

    def _prune(self, now: float) -> None:
        self._rules = [
            r
            for r in self._rules
            if r.remaining != 0 and (r.expires_at is None or r.expires_at > now)
        ]

    # -- per request -------------------------------------------------------------------

    def decide(self, target: str | None) -> Fault | None:
        """The fault for one request to ``target``, or None to serve it normally.

        Consumes ``count`` and draws from the RNG only for rules that match, so a
        seeded rule gives the same sequence for the same request sequence.
        """
        rules = self._rules
        if not rules:
            return None
        now = 0.0
        chosen: _Rule | None = None
        delay = 0.0
        stale = False
        for rule in rules:
            if rule.expires_at is not None:
                if not now:
                    now = time.monotonic()
                if now >= rule.expires_at:
                    stale = True
                    continue
            if rule.remaining == 0:
                continue
            if rule.target is not None and rule.target != target:
                continue
            if chosen is not None and rule.terminal:
                continue
            if rule.meter is not None:
                if not now:
                    now = time.monotonic()
                if rule.within_rate(target, now):
                    continue
            if rule.probability < 1.0 and rule.rng.random() >= rule.probability:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    stale = True
            if rule.terminal:
                chosen = rule
            delay += rule.fault.delay_s
        if stale:
            self._prune(now or time.monotonic())
        if chosen is None:
            if delay <= 0.0:
                return None
            return Fault(kind="latency", rule_id=None, delay_s=delay)
        if delay == chosen.fault.delay_s:
            return chosen.fault
        return dataclasses.replace(chosen.fault, delay_s=delay)
