"""Request shapes of the people API; bounded like the admin API's (see :mod:`tenantgate.admin.schemas`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tenantgate.admin.schemas import MAX_MODELS, Identifier, LimitsIn, Name, _sane_time
from tenantgate.people.passwords import MAX_LENGTH

Password = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH)]
Email = Annotated[str, Field(min_length=3, max_length=254)]
Token = Annotated[str, Field(min_length=1, max_length=128)]
Role = Literal["owner", "admin", "member"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupIn(Strict):
    email: Email
    password: Password
    name: Name | None = None
    invite: Token | None = None


class LoginIn(Strict):
    email: Email
    password: Password


class PasswordChangeIn(Strict):
    current_password: Password
    new_password: Password


class PasswordResetIn(Strict):
    token: Token
    new_password: Password


class LinkIn(Strict):
    token: Token


class MyKeyIn(LimitsIn):
    name: Name | None = None
    tenant_id: Identifier | None = None
    models: list[Name] | None = Field(default=None, max_length=MAX_MODELS)
    expires_at: Annotated[datetime | None, AfterValidator(_sane_time)] = None


class RoleIn(Strict):
    role: Role


class InviteIn(Strict):
    email: Email | None = None
    role: Role = "member"
    expires_in_hours: float | None = Field(default=None, gt=0, le=24 * 365)


class AdminInviteIn(InviteIn):
    tenant_id: Identifier | None = None


class UserCreate(LimitsIn):
    email: Email
    password: Password | None = Field(default=None, description="Omitted: the answer carries a reset link.")
    name: Name | None = None
    is_admin: bool = False
    tenant_id: Identifier | None = Field(default=None, description="Join this tenant (else a personal tenant).")
    role: Role = "member"


class UserUpdate(LimitsIn):
    email: Email | None = None
    name: Name | None = None
    is_admin: bool | None = None
    disabled: bool | None = None
