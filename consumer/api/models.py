"""What the API answers, as the OpenAPI schema publishes it (responses are built as plain JSON
for speed; the fuzzing test checks every answer against these models)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# An id in a request body, bounded as the path and query ids are (consumer/api/params.py).
ErasureId = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")
]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="Validation errors: where, and what is wrong (never the input)."
    )


class Conversation(BaseModel):
    conversation_id: str
    customer_id: str | None
    user_id: str | None
    started_at: datetime
    ended_at: datetime | None
    message_count: int


class Page(BaseModel):
    next_cursor: str | None = Field(
        description="Give it as `cursor` for the next page; null on the last page."
    )
    cold_months: list[str] = Field(
        description="Months (YYYY-MM) of this tenant, within the request's window if any, whose"
        " history has moved to the cold tier: older history of this subject may be there."
    )


class ConversationPage(Page):
    items: list[Conversation]


class Message(BaseModel):
    id: int = Field(description="The message's row id (unique, stable).")
    timestamp: datetime
    role: Literal["user", "assistant", "system", "tool"]
    content: str
    metadata: dict[str, Any]


class MessagePage(Page):
    items: list[Message]


class CustomerMessage(Message):
    conversation_id: str
    user_id: str | None


class CustomerMessagePage(Page):
    items: list[CustomerMessage]


class ConversationSpan(BaseModel):
    conversation_id: str
    started_at: datetime | None
    ended_at: datetime | None


class Profile(BaseModel):
    user_id: str
    conversation_count: int
    message_count: int
    first_conversation: ConversationSpan | None
    last_conversation: ConversationSpan | None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]


class ErasureRequest(BaseModel):
    """Exactly one of customer_id, user_id, conversation_id; a reason that names no one."""

    model_config = ConfigDict(extra="forbid")

    customer_id: ErasureId | None = None
    user_id: ErasureId | None = None
    conversation_id: ErasureId | None = None
    reason: str = Field("", max_length=500, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$",
                        description="Why (kept in the audit trail): never the subject's id.")  # fmt: skip

    @model_validator(mode="after")
    def _one_subject(self) -> ErasureRequest:
        given = [
            name for name in ("customer_id", "user_id", "conversation_id") if getattr(self, name)
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of customer_id, user_id, conversation_id")
        return self

    def subject(self) -> tuple[str, str]:
        for name in ("customer_id", "user_id", "conversation_id"):
            value = getattr(self, name)
            if value:
                return name, value
        raise ValueError("no subject")


class Erasure(BaseModel):
    id: int
    kind: Literal["customer", "user", "conversation"]
    subject_hash: str = Field(description="Keyed hash of the subject: never the id in clear.")
    requested_at: datetime
    reason: str
    status: Literal["running", "completed"]
    step: str
    counts: dict[str, Any]
    error: str | None
    updated_at: datetime
    completed_at: datetime | None
