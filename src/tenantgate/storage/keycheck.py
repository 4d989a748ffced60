"""Fail fast when replicas disagree on the credential-encryption key.

Every replica must encrypt and decrypt upstream credentials with the same ``TENANTGATE_SECRET_KEY``. The first
process to start on a database stores a token encrypted with its key; every later start decrypts it, and a
process whose key cannot refuses to start with a message that says why, instead of serving and failing on
every stored credential (or, worse, writing credentials no other replica can read).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tenantgate.core.secrets import CredentialCipher
from tenantgate.storage import schema

CHECK_NAME = "secret_key_check"
_PLAINTEXT = "tenantgate credential key check"


class SecretKeyMismatch(RuntimeError):
    """This process's credential-encryption key is not the one the database was set up with."""


async def check_secret_key(engine: AsyncEngine, cipher: CredentialCipher) -> None:
    table = schema.gateway_meta
    async with engine.connect() as conn:
        stored = await conn.scalar(sa.select(table.c.value).where(table.c.name == CHECK_NAME))
    if stored is None:
        try:
            async with engine.begin() as conn:
                await conn.execute(table.insert().values(name=CHECK_NAME, value=cipher.encrypt(_PLAINTEXT)))
            return
        except IntegrityError:  # another replica wrote it first: check against theirs
            async with engine.connect() as conn:
                stored = await conn.scalar(sa.select(table.c.value).where(table.c.name == CHECK_NAME))
    try:
        ok = stored is not None and cipher.decrypt(stored) == _PLAINTEXT
    except ValueError:
        ok = False
    if not ok:
        raise SecretKeyMismatch(
            "TENANTGATE_SECRET_KEY (or the key file) is not the key this database was set up with: every replica "
            "must use the same credential-encryption key. Refusing to start."
        )
