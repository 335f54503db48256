"""The OpenAPI 3.1 document at `/openapi.json` and the interactive page at `/docs`.

The document is generated from declarations: each route declares its operation next to
itself (`trustcard.api.operations.documented`): summary, parameters, the models of its
body and answers, and the exception classes it may raise. Each catalogued job type's
parameter model (`trustcard.params`, the one the task service validates with) gives its
query parameters and its JSON body; `trustcard.api.schemas` gives the answers' models;
the error answers are generated from `trustcard.exceptions` (`trustcard.api.error_answers`).
This module walks the app's URL map, reads each view's declaration and places the JSON
Schemas pydantic writes in paths and operations.

Why our own small module rather than a Flask OpenAPI integration (flask-openapi3,
spectree, APIFlask): each of them documents what it validates itself, so adopting one
means handing it our request handling, and that breaks fixed parts of the contract.

- flask-openapi3 replaces `Flask` with its `OpenAPI` class and our blueprints with
  `APIBlueprint`, passes validated models into the views as arguments, and validates
  the query string and the body as two separate models. spectree and APIFlask work
  the same way: a decorator per view with one model per location. Our submissions
  take each parameter from either place, refuse one given in both, and check the
  merged set against one model.
- Their validation failures are their own answers (flask-openapi3 and spectree: a
  list of pydantic errors, APIFlask: `{"message", "detail"}`). Our errors have the
  fixed shape `{"error": code, "message": text, ...}`, with a 422 that names each
  parameter. Each library has a hook to change this, but then the document it writes
  describes its own shape unless every operation is annotated again by hand.
- The catalogue's job types share one rule, `POST /tasks/<path:job_route>`. A library
  that reads the URL map documents that as one path with a `job_route` parameter;
  clients need one path per job type with that type's own parameters.

Generating the document here keeps the views as they are, costs three small modules, and
a unit test holds it to the app: every route the app serves must be in the document.

The page at `/docs` is Swagger UI, served from the files that the `flask-swagger-ui`
package ships (a current Swagger UI 5 release, depending only on Flask), so it works
with no network: no CDN, and the validator badge (which calls out) is switched off.
"""

from __future__ import annotations

import logging
from importlib.resources import files

from flask import Blueprint, Response, current_app, jsonify, render_template_string, url_for

from trustcard.api.openapi_document import TITLE, build_document
from trustcard.api.operations import Answer, Operation, documented

log = logging.getLogger(__name__)

SWAGGER_UI_DIR = str(files("flask_swagger_ui") / "dist")
"""Swagger UI's built files, as shipped inside the flask-swagger-ui package."""

bp = Blueprint("openapi", __name__, static_folder=SWAGGER_UI_DIR, static_url_path="/docs/assets")


@bp.get("/openapi.json")
@documented(
    Operation(
        "openapi_document",
        "This OpenAPI document",
        "documentation",
        {200: Answer("The OpenAPI 3.1 document.", {"type": "object"})},
    )
)
def openapi_document() -> Response:
    """The document, built once per app (it depends on the settings: API_KEY, METRICS_TOKEN)."""
    document = current_app.extensions.get("trustcard.openapi")
    if document is None:
        document = build_document(current_app._get_current_object())  # type: ignore[attr-defined]
        current_app.extensions["trustcard.openapi"] = document
        log.debug("OpenAPI document built: %d paths", len(document["paths"]))
    return jsonify(document)


@bp.get("/docs")
@documented(
    Operation(
        "docs_page",
        "Interactive documentation (Swagger UI)",
        "documentation",
        {200: Answer("An HTML page.", {"type": "string"}, media_type="text/html")},
    )
)
def docs() -> str:
    """Swagger UI on our own document, every asset served by this app."""
    return render_template_string(
        DOCS_PAGE,
        title=f"{TITLE} API",
        css_url=url_for("openapi.static", filename="swagger-ui.css"),
        js_url=url_for("openapi.static", filename="swagger-ui-bundle.js"),
        icon_url=url_for("openapi.static", filename="favicon-32x32.png"),
        spec_url=url_for("openapi.openapi_document"),
    )


DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }}</title>
  <link rel="stylesheet" href="{{ css_url }}">
  <link rel="icon" type="image/png" href="{{ icon_url }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ js_url }}"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: {{ spec_url | tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""
