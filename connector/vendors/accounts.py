"""Which vendor account (base URL and credential) serves a target.

One deployment may hold several Kombo accounts (EU and US, production and staging)
and per-customer Comeet tokens. Configuration (:mod:`connector.settings`) names them
and lists the targets each serves: Kombo integration ids, Comeet evaluation ids, exact
or as shell-style patterns (``us-*``). Rules, in order:

1. an exact id listed by an account wins;
2. otherwise the longest matching pattern wins (the most specific), ties by account name;
3. otherwise the default account (``CONNECTOR_KOMBO__API_KEY`` and region/base URL,
   ``CONNECTOR_COMEET__TOKEN``), as a single-account deployment always had it. When named
   accounts exist and the default has no credential, an unmatched target is a permanent
   delivery error naming the target (dead-lettered; replay it after configuring).

A credential lives only in the ``Authorization`` header this module builds: it is never
logged, and :func:`secret_values` lists every one for the log redaction filter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from pydantic import SecretStr

from connector.errors import PermanentDeliveryError
from connector.settings import ComeetSettings, KomboSettings, Settings

__all__ = ["Account", "AccountRouter", "comeet_router", "kombo_router", "secret_values"]

logger = logging.getLogger(__name__)

_PATTERN_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Account:
    """Where and as whom to send. ``repr`` never shows the credential."""

    name: str
    base_url: str
    headers: dict[str, str] = field(repr=False)


def _bearer(secret: SecretStr) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret.get_secret_value()}"}


class AccountRouter:
    """Picks the account for a target id (see the module doc for the rules)."""

    def __init__(
        self,
        vendor: str,
        default: Account | None,
        accounts: list[tuple[Account, list[str]]],
        *,
        what: str,
    ) -> None:
        self.vendor = vendor
        self._what = what
        self._default = default
        self._exact: dict[str, Account] = {}
        patterns: list[tuple[str, Account]] = []
        # The settings refuse an id or pattern listed by two accounts.
        for account, selectors in accounts:
            for selector in selectors:
                if _PATTERN_CHARS & set(selector):
                    patterns.append((selector, account))
                else:
                    self._exact[selector] = account
        self._patterns = sorted(patterns, key=lambda p: (-len(p[0]), p[1].name))
        self._cache: dict[str, Account] = {}

    @property
    def names(self) -> list[str]:
        named = {a.name for a in self._exact.values()} | {a.name for _, a in self._patterns}
        return ([self._default.name] if self._default else []) + sorted(named)

    def select(self, target_id: str) -> Account:
        account = self._cache.get(target_id)
        if account is not None:
            return account
        account = self._exact.get(target_id)
        if account is None:
            account = next((a for p, a in self._patterns if fnmatchcase(target_id, p)), None)
        if account is None:
            account = self._default
        if account is None:
            raise PermanentDeliveryError(
                f"no {self.vendor} account serves {self._what} {target_id!r}: list it in an "
                f"account's {self._what}s or configure the default credential",
                may_have_arrived=False,
            )
        if len(self._cache) < 100_000:  # bounded; targets are far fewer in practice
            self._cache[target_id] = account
        return account


def kombo_router(settings: KomboSettings) -> AccountRouter:
    has_key = bool(settings.api_key.get_secret_value())
    # Without named accounts the default is used even with no key, as before (the
    # vendor's 401 then says what is wrong); with them, only when it has a key.
    default = (
        Account("default", settings.url, _bearer(settings.api_key))
        if has_key or not settings.accounts
        else None
    )
    accounts = [
        (Account(name, account.url, _bearer(account.api_key)), account.integrations)
        for name, account in sorted(settings.accounts.items())
    ]
    router = AccountRouter("kombo", default, accounts, what="integration")
    if settings.accounts:
        logger.info(
            "kombo accounts: %s",
            ", ".join(f"{a.name} -> {a.base_url}" for a, _ in accounts),
        )
    return router


def comeet_router(settings: ComeetSettings) -> AccountRouter:
    has_token = bool(settings.token.get_secret_value())
    default = (
        Account("default", settings.url, _bearer(settings.token))
        if has_token or not settings.customers
        else None
    )
    customers = [
        (
            Account(name, (customer.base_url or settings.url).rstrip("/"), _bearer(customer.token)),
            customer.evaluations,
        )
        for name, customer in sorted(settings.customers.items())
    ]
    router = AccountRouter("comeet", default, customers, what="evaluation")
    if settings.customers:
        logger.info("comeet customers: %s", ", ".join(a.name for a, _ in customers))
    return router


def secret_values(settings: Settings) -> list[str]:
    """Every credential the settings hold, for the log redaction filter: each registered
    vendor's (:mod:`connector.vendors.registry`) and Kafka's."""
    # Imported here: the vendor modules import this one (their account routers).
    from connector.vendors import registry

    values = [*registry.secret_values(settings), settings.kafka.sasl_password.get_secret_value()]
    return [v for v in values if v]
