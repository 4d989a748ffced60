"""``TENANTGATE_BOOTSTRAP_KEYS="tenantA:key1,tenantB:key2"``: tenants and keys from the environment alone.

Each key is stored hashed like any other; running it again (another start, another replica) changes nothing.
"""

from __future__ import annotations

from tenantgate.auth.keys import key_from_plaintext
from tenantgate.config.file import Defaults
from tenantgate.storage.repos import DuplicateName, KeyRepo, TenantRepo
from tenantgate.storage.rows import LimitFields


def parse_bootstrap(value: str) -> list[tuple[str, str]]:
    pairs = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        tenant, sep, key = item.partition(":")
        if not sep or not tenant.strip() or not key.strip():
            raise ValueError("TENANTGATE_BOOTSTRAP_KEYS must look like 'tenantA:key1,tenantB:key2'")
        pairs.append((tenant.strip(), key.strip()))
    return pairs


async def bootstrap_keys(value: str, tenants: TenantRepo, keys: KeyRepo, defaults: Defaults | None = None) -> None:
    """Tenants and keys made here get the config file's default limits, like those made by the admin API."""
    tenant_limits = LimitFields(**defaults.tenant_limits.model_dump()) if defaults else None
    key_limits = LimitFields(**defaults.key_limits.model_dump()) if defaults else None
    for tenant_name, plaintext in parse_bootstrap(value):
        tenant = await tenants.get_by_name(tenant_name)
        if tenant is None:
            try:
                tenant = await tenants.create(tenant_name, tenant_limits)
            except DuplicateName:  # another replica created it a moment ago
                tenant = await tenants.get_by_name(tenant_name)
        assert tenant is not None
        new = key_from_plaintext(plaintext)
        if await keys.find_by_public_id(new.public_id) is None:
            try:
                await keys.create(
                    tenant_id=tenant.id,
                    public_id=new.public_id,
                    secret_hash=new.secret_hash,
                    name="bootstrap",
                    limits=key_limits,
                )
            except Exception:
                if await keys.find_by_public_id(new.public_id) is None:
                    raise
