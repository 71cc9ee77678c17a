"""Who may talk to the server: loopback binds by default, a token for anything else."""

from __future__ import annotations

import hmac
import ipaddress

from vtr.errors import ConfigError

COOKIE = "vtr_token"
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (the only binds that need no token)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a token (one line, with the fix)."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"--host {host} is reachable from other machines: add --token SECRET (clients send "
                          "'Authorization: Bearer SECRET' or open /login?token=SECRET once in the browser)")


def allowed_hosts(host: str, token: str | None) -> list[str]:
    """Host headers a loopback server answers (others are refused, against DNS rebinding); any with a token."""
    if token or not is_loopback(host):
        return ["*"]
    return sorted({"127.0.0.1", "localhost", "::1", "[::1]", host.strip("[]"), host})


def token_ok(expected: str, authorization: str | None, cookie: str | None) -> bool:
    """Whether a request carries ``expected`` as a bearer token or in the login cookie (constant time)."""
    given = []
    if authorization and authorization[:7].lower() == "bearer ":
        given.append(authorization[7:].strip())
    if cookie:
        given.append(cookie)
    return any(hmac.compare_digest(g.encode(), expected.encode()) for g in given)
