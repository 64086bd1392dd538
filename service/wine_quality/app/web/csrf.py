"""CSRF protection of the web page's forms: the tokens, and the glue the page's routes call.

CSRF uses the signed double-submit pattern, stateless so that every gunicorn worker agrees:
the browser holds a random nonce in a `SameSite=Strict`, `HttpOnly` cookie, and every form carries
the nonce signed (itsdangerous, with a timestamp) by the service's key. A POST is accepted only when
the signature is valid, not expired, and the signed nonce equals the cookie's. Another site can
neither read the page's token nor make the browser send our cookie, so it cannot forge a post.

The signing key is `WINE_QUALITY_SECRET_KEY`. When that is empty, gunicorn's master makes a random
one at start, which its workers inherit (wine_quality.app.gunicorn_conf), and an app built outside
gunicorn makes its own (wine_quality.app.create_app): forms then validate only within that server.
The key is never derived from anything public.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from flask import Response, g, request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

COOKIE_NAME = "wine_quality_csrf"
FIELD_NAME = "csrf_token"
# A form left open in a tab stays usable for a working day; an old token gets a readable error.
TOKEN_MAX_AGE_SECONDS = 12 * 60 * 60
_SALT = "wine-quality.web.csrf"
_NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)


MISSING_COOKIE = (
    "Your browser did not send the page's security cookie. "
    "Allow cookies for this site, reload the page and send the form again."
)


class CSRFError(Exception):
    """A form post failed the CSRF check; the message says why in words a user understands."""


def new_signing_key() -> str:
    """A random key for a server started without WINE_QUALITY_SECRET_KEY."""
    return secrets.token_urlsafe(32)


EPHEMERAL_KEY_WARNING = (
    "WINE_QUALITY_SECRET_KEY is empty: the web forms are signed with a random key made at start, "
    "so they only validate within this server and not after a restart; set "
    "WINE_QUALITY_SECRET_KEY to the same secret on every replica (the Helm chart does)"
)


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def is_nonce(value: str | None) -> bool:
    return bool(value) and _NONCE_PATTERN.match(value) is not None


class CsrfTokens:
    """Issues and checks the form tokens for one signing key."""

    def __init__(self, key: str, max_age_seconds: int = TOKEN_MAX_AGE_SECONDS) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt=_SALT)
        self._max_age = max_age_seconds

    def issue(self, nonce: str) -> str:
        return self._serializer.dumps(nonce)

    def check(self, cookie_nonce: str | None, token: str | None) -> None:
        """Pass if `token` is a valid, fresh signature of `cookie_nonce`; else raise CSRFError."""
        if not token:
            raise CSRFError("The form was sent without its security token.")
        if not is_nonce(cookie_nonce):
            raise CSRFError(MISSING_COOKIE)
        try:
            signed_nonce = self._serializer.loads(token, max_age=self._max_age)
        except SignatureExpired:
            raise CSRFError("The form has expired. Reload the page and send it again.") from None
        except BadSignature:
            raise CSRFError(
                "The form's security token is not valid. Reload the page and send it again."
            ) from None
        if not secrets.compare_digest(str(signed_nonce), cookie_nonce):
            raise CSRFError(
                "The form's security token belongs to another browser session. "
                "Reload the page and send it again."
            )


# ---------------------------------------------------------------- the page's glue


def form_token(key: str) -> str:
    """The token to put in a form served to this browser (its nonce, signed)."""
    return CsrfTokens(key).issue(browser_nonce())


def browser_nonce() -> str:
    """This browser's nonce: the one in its cookie, or a new one `set_nonce_cookie` sends."""
    if "web_csrf_nonce" not in g:
        cookie = request.cookies.get(COOKIE_NAME)
        g.web_csrf_new = not is_nonce(cookie)
        g.web_csrf_nonce = new_nonce() if g.web_csrf_new else cookie
    return g.web_csrf_nonce


def check_form(key: str, form: Mapping[str, str]) -> None:
    """Pass if the posted form carries a valid token for this browser's cookie; else CSRFError."""
    CsrfTokens(key).check(request.cookies.get(COOKIE_NAME), form.get(FIELD_NAME))


def set_nonce_cookie(response: Response) -> None:
    """Send the nonce made for this response's forms, if one was made."""
    if g.get("web_csrf_new"):
        response.set_cookie(
            COOKIE_NAME,
            g.web_csrf_nonce,
            httponly=True,
            samesite="Strict",
            secure=request.is_secure,
            path="/",
        )
