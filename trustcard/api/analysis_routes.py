"""The analysis endpoints: thin views over the analysis service."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context, url_for

from trustcard.analyses.listing import MAX_PAGE, STATUSES
from trustcard.analyses.service import AnalysisService
from trustcard.analyses.urls import MAX_URL_LENGTH
from trustcard.api import analysis_schemas as schemas
from trustcard.api.event_hub import EventHub
from trustcard.api.auth import API_KEY_GUARD, client_identity, request_id, require_api_key
from trustcard.api.operations import Answer, Header, Operation, Parameter, Raises, documented
from trustcard.api.ratelimit import add_rate_limit_headers, limit_submissions
from trustcard.api.task_routes import IDEMPOTENCY_KEY, _idempotency_key
from trustcard.callback_urls import CALLBACK_HEADER, MAX_URL_LENGTH as MAX_CALLBACK_LENGTH
from trustcard.api.analysis_stream import AnalysisStream, wait_for_end
from trustcard.api.task_stream import (
    LAST_EVENT_ID_HEADER,
    LAST_EVENT_ID_PARAMETER,
    STREAM_HEADERS,
    last_event_id,
    wait_parameter,
    wait_seconds,
)
from trustcard.exceptions import (
    AnalysisAlreadyEnded,
    AnalysisNotFound,
    AnalysisNotRetryable,
    BadRequest,
    DatabaseUnavailable,
    IdempotencyKeyReused,
    PayloadTooLarge,
    QueueNotReplicated,
    QueueUnavailable,
    ValidationFailed,
)

bp = Blueprint("analyses", __name__, url_prefix="/analyses")
bp.before_request(require_api_key)
bp.before_request(limit_submissions)
bp.after_request(add_rate_limit_headers)

ANALYSIS_ID = Parameter("analysis_id", "path", "The id from the submit answer.",
                        {"type": "string", "maxLength": 64}, required=True)
LOCATION = Header("The analysis's URL.", {"type": "string"})
URL_RULES = (
    "An Instagram post, reel or tv URL: https or http; host instagram.com, www.instagram.com or "
    "m.instagram.com; path /p/<shortcode>/, /reel/<shortcode>/ or /tv/<shortcode>/. Query and fragment "
    "are dropped; it is kept as https://www.instagram.com/p/<shortcode>/."
)


def _service() -> AnalysisService:
    service: AnalysisService = current_app.extensions["trustcard.analysis_service"]
    return service


def _location(analysis_id: str) -> dict[str, str]:
    return {"Location": url_for("analyses.read", analysis_id=analysis_id)}


@bp.post("")
@documented(
    Operation(
        "submit_analysis",
        "Analyse an Instagram post",
        "analyses",
        {
            202: Answer("Started: its first stage is queued.", schemas.Analysis, headers={"Location": LOCATION}),
            200: Answer("The same post is being analysed already (or the Idempotency-Key was used): that analysis.",
                        schemas.Analysis, headers={"Location": LOCATION}),
        },
        description="Body `{\"url\": ...}`. " + URL_RULES,
        parameters=(IDEMPOTENCY_KEY, Parameter(
            CALLBACK_HEADER, "header",
            "An http(s) URL: when the analysis ends (completed, failed or cancelled), its final view (as GET "
            "/analyses/{analysis_id} answers it) is POSTed there, signed and retried as task callbacks are "
            "(`TrustCard-Signature`); the analysis's `callback` shows each attempt. Refused with 422 as for tasks.",
            {"type": "string", "format": "uri", "maxLength": MAX_CALLBACK_LENGTH})),
        raises=(Raises(BadRequest, "The body is not a JSON object with `url`"), IdempotencyKeyReused,
                PayloadTooLarge, Raises(ValidationFailed, "The URL is not an Instagram post (the problem says "
                                        "what is wrong with it), or the Callback-URL is refused"), QueueUnavailable,
                QueueNotReplicated, DatabaseUnavailable),
        guard=API_KEY_GUARD,
        rate_limited=True,
    )
)
def submit() -> tuple[Response, int, dict[str, str]]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or set(body) - {"url"}:
        raise BadRequest('The body must be a JSON object {"url": "<Instagram post URL>"}.', parameter="body")
    if "url" not in body:
        raise ValidationFailed("url is required.", problems=[{"parameter": "url", "problem": "is required"}])
    submitted = _service().submit(body["url"], _idempotency_key(), submitted_by=client_identity(),
                                  request_id=request_id(), callback_url=request.headers.get(CALLBACK_HEADER))
    headers = _location(submitted.analysis["id"])
    if submitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return jsonify(submitted.analysis), 202 if submitted.created else 200, headers


@bp.get("")
@documented(
    Operation(
        "list_analyses",
        "A post's analyses, or the analyses in one status, newest first",
        "analyses",
        {200: Answer("A page of analyses.", schemas.AnalysisPage)},
        parameters=(
            Parameter("url", "query", "Only this post's analyses (any accepted spelling of it).",
                      {"type": "string", "maxLength": MAX_URL_LENGTH}),
            Parameter("status", "query", "Only analyses in this status.", {"type": "string", "enum": list(STATUSES)}),
            Parameter("cursor", "query", "`next_cursor` of the page before.", {"type": "string"}),
            Parameter("limit", "query", f"Analyses per page, 1 to {MAX_PAGE} (20).",
                      {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        ),
        raises=(Raises(ValidationFailed, "A parameter is out of range, or the URL is not an Instagram post"),
                DatabaseUnavailable),
        guard=API_KEY_GUARD,
    )
)
def history() -> Response:
    limit_text = request.args.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise ValidationFailed(f"limit must be a whole number from 1 to {MAX_PAGE}.",
                               problems=[{"parameter": "limit", "problem": f"must be from 1 to {MAX_PAGE}"}])
    analyses, cursor = _service().history(url=request.args.get("url"), status=request.args.get("status"),
                                          cursor=request.args.get("cursor"), limit=int(limit_text))
    return jsonify({"analyses": analyses, "next_cursor": cursor})


@bp.get("/<analysis_id>")
@documented(
    Operation(
        "get_analysis",
        "Read an analysis",
        "analyses",
        {200: Answer("Its status, its stages in order, progress and result.", schemas.Analysis)},
        description="With `wait=N`, a long poll: answers as soon as the analysis ends, else after N seconds "
        "with its state then.",
        parameters=(ANALYSIS_ID, wait_parameter("analysis")),
        raises=(AnalysisNotFound, Raises(ValidationFailed, "`wait` is not a number of seconds in (0, 25]"),
                DatabaseUnavailable),
        guard=API_KEY_GUARD,
    )
)
def read(analysis_id: str) -> Response:
    wait = wait_seconds(request.args.get("wait"))
    if wait is None:
        return jsonify(_service().get(analysis_id))
    return jsonify(wait_for_end(_service(), _event_hub(), analysis_id, wait))


@bp.get("/<analysis_id>/events")
@documented(
    Operation(
        "analysis_events",
        "Follow an analysis as Server-Sent Events",
        "analyses",
        {
            200: Answer(
                "Server-Sent Events until the analysis ends: `event: state` (the analysis, as GET "
                "/analyses/{analysis_id} answers it) at once; `event: update` for each stage transition, in "
                "order, never two in one (the analysis as read then, plus `transition`: `stage`, `index`, "
                "`run`, `status` one of running, completed, failed, cancelled, retried); `event: end` with "
                "the final view, then the stream closes. Each event has an `id:` (a transition's is even, "
                "the end's odd); a client reconnecting with `Last-Event-ID` gets every transition after "
                "it, then the stream goes on (204 when it already had the end). A comment (`: keep-alive`) "
                "every EVENTS_HEARTBEAT_SECONDS while nothing changes.",
                {"type": "string"},
                media_type="text/event-stream",
            ),
            204: Answer("The `Last-Event-ID` given is the end's: the analysis has ended, nothing is left."),
        },
        parameters=(ANALYSIS_ID, LAST_EVENT_ID_PARAMETER),
        raises=(AnalysisNotFound, Raises(ValidationFailed, f"`{LAST_EVENT_ID_HEADER}` is not a whole number"),
                DatabaseUnavailable),
        guard=API_KEY_GUARD,
    )
)
def events(analysis_id: str) -> Response:
    after = last_event_id(request.headers.get(LAST_EVENT_ID_HEADER))
    heartbeat = current_app.config["TRUSTCARD_SETTINGS"].events_heartbeat_seconds
    stream = AnalysisStream(_service(), _event_hub(), analysis_id, after, heartbeat)  # a 404 is a 404
    if stream.already_delivered:
        stream.close()
        return Response(status=204)
    return Response(stream_with_context(stream.events()), mimetype="text/event-stream", headers=STREAM_HEADERS)


def _event_hub() -> EventHub:
    hub: EventHub = current_app.extensions["trustcard.events"]
    return hub


@bp.delete("/<analysis_id>")
@documented(
    Operation(
        "cancel_analysis",
        "Cancel an analysis: stop its running stage, cancel those not started",
        "analyses",
        {200: Answer("Cancelled; what the stages before produced is kept.", schemas.Analysis)},
        parameters=(ANALYSIS_ID,),
        raises=(AnalysisNotFound, AnalysisAlreadyEnded, QueueUnavailable, DatabaseUnavailable),
        guard=API_KEY_GUARD,
    )
)
def cancel(analysis_id: str) -> Response:
    return jsonify(_service().cancel(analysis_id))


@bp.post("/<analysis_id>/retry")
@documented(
    Operation(
        "retry_analysis",
        "Resume a failed or cancelled analysis at the stage that did not complete",
        "analyses",
        {202: Answer("Resumed: that stage is queued; the stages before it are not run again.",
                     schemas.Analysis, headers={"Location": LOCATION})},
        parameters=(ANALYSIS_ID,),
        raises=(AnalysisNotFound, AnalysisNotRetryable, QueueUnavailable, QueueNotReplicated, DatabaseUnavailable),
        guard=API_KEY_GUARD,
        rate_limited=True,
    )
)
def retry(analysis_id: str) -> tuple[Response, int, dict[str, str]]:
    analysis = _service().retry(analysis_id)
    return jsonify(analysis), 202, _location(analysis_id)
