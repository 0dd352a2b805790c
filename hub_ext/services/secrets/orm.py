"""SQLAlchemy tables of the database backend; never imports the API models (STYLE rule 11).

One table, ``secrets``: a user's secret by (owner, name), its value as a
Fernet token (bytes; the encryption key is not in the database) and its
times. The token authenticates the owner and name too: they are bound into
the plaintext (see :mod:`.keys`), so a row copied to another owner or name
does not decrypt there.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Secret(Base):
    """One user's secret."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_secrets_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(128))
    #: Fernet token of the value (with owner and name bound in).
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
