"""Flask's cookie sessions, with the cookie signer built once per app instead of per request,
and no cookies parsed for a request that sent none.

The API keeps no session, but Flask opens one for every request, and its stock interface
builds a new itsdangerous signer (the secret key's derivation included) each time: about
a tenth of Flask's own share of a submission. The signer depends only on settings fixed
at startup, so it is built on first use and kept. An API client sends no Cookie header, and
for it the stock interface still parses the (absent) cookies and looks the session's up,
which werkzeug answers by raising and catching a KeyError: about 4% of the web's samples on
a minimal request (py-spy, gunicorn gevent worker). What a session does is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

if TYPE_CHECKING:
    from flask import Flask, Request
    from itsdangerous import URLSafeTimedSerializer

SIGNER_EXTENSION = "trustcard.session_signer"


class SignerOnceSessionInterface(SecureCookieSessionInterface):
    """`SecureCookieSessionInterface` whose signer is made once per app, and which opens a
    request without a Cookie header as the stock one does, without parsing any."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if "HTTP_COOKIE" in request.environ:
            return super().open_session(app, request)
        # The stock interface's answers when it finds no session cookie.
        return None if self.get_signing_serializer(app) is None else self.session_class()

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if SIGNER_EXTENSION not in app.extensions:
            app.extensions[SIGNER_EXTENSION] = super().get_signing_serializer(app)
        signer: URLSafeTimedSerializer | None = app.extensions[SIGNER_EXTENSION]
        return signer


def init_app(app: Flask) -> None:
    app.session_interface = SignerOnceSessionInterface()
