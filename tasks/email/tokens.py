"""Per-email tokens: in unsubscribe links and reply-to addresses, naming the email unforgeably.

A token is the email's outbox key, base32 (lower case: some mail systems fold the case of an
address's local part), a dot, and a keyed MAC of the key. The server reads the key back from
the token and checks the MAC, so nothing is stored per token, and a token cannot be made for an
email without ``NURTURE_SECRET``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

# Only for development and tests: production sets NURTURE_SECRET, or tokens can be forged.
DEV_SECRET = "nurture-development-secret"
MAC_CHARS = 32  # 128 bits


def email_token(dedupe_key: str) -> str:
    named = base64.b32encode(dedupe_key.encode()).decode().rstrip("=").lower()
    return f"{named}.{_mac(dedupe_key)}"


def read_email_token(token: str) -> str | None:
    """The outbox key a token names, or None if it was not made here (or was altered)."""
    named, dot, mac = token.strip().lower().partition(".")
    if not dot or len(mac) != MAC_CHARS or not named:
        return None
    try:
        key = base64.b32decode(named.upper() + "=" * (-len(named) % 8)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return key if hmac.compare_digest(mac, _mac(key)) else None


def reply_address(reply_to: str | None, dedupe_key: str) -> str | None:
    """``replies@x`` -> ``replies+TOKEN@x``: a reply names the email it answers."""
    if not reply_to or "@" not in reply_to:
        return reply_to
    local, _, domain = reply_to.rpartition("@")
    return f"{local}+{email_token(dedupe_key)}@{domain}"


def token_in_address(address: str) -> str | None:
    """The token of a ``local+TOKEN@domain`` address, if it carries one."""
    local = address.strip().strip("<>").rpartition("@")[0]
    return local.split("+", 1)[1] if "+" in local else None


def _mac(key: str) -> str:
    secret = os.environ.get("NURTURE_SECRET", DEV_SECRET).encode()
    return hmac.digest(secret, key.encode(), "sha256").hex()[:MAC_CHARS]
