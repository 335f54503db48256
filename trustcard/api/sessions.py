"""Flask's cookie sessions, with the cookie signer built once per app instead of per request.

The API keeps no session, but Flask opens one for every request, and its stock interface
builds a new itsdangerous signer (the secret key's derivation included) each time: about
a tenth of Flask's own share of a submission. The signer depends only on settings fixed
at startup, so it is built on first use and kept; what a session does is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask.sessions import SecureCookieSessionInterface

if TYPE_CHECKING:
    from flask import Flask
    from itsdangerous import URLSafeTimedSerializer

SIGNER_EXTENSION = "trustcard.session_signer"


class SignerOnceSessionInterface(SecureCookieSessionInterface):
    """`SecureCookieSessionInterface` whose signer is made once per app."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if SIGNER_EXTENSION not in app.extensions:
            app.extensions[SIGNER_EXTENSION] = super().get_signing_serializer(app)
        signer: URLSafeTimedSerializer | None = app.extensions[SIGNER_EXTENSION]
        return signer


def init_app(app: Flask) -> None:
    app.session_interface = SignerOnceSessionInterface()
