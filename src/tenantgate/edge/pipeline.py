"""The request path, in order: edge → auth → route → limits (reserve) → forward → meter (settle, enqueue).

This is the one module that knows the order of the steps. Each step lives in its own module; here they are
only called, one after another, and every failure becomes an OpenAI-shaped error response.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tenantgate.auth.authenticator import Principal
from tenantgate.core.errors import GatewayError, ModelNotFound, NotFound, ServiceUnavailable, UpstreamError
from tenantgate.edge.context import Gateway
from tenantgate.edge.disconnect import DisconnectWatch
from tenantgate.edge.forward import Attempt
from tenantgate.edge.idempotent import Claimed
from tenantgate.edge.metering import RequestMeter, RequestTrace
from tenantgate.edge.relay import StreamRelay, rename_model
from tenantgate.edge.request import ParsedRequest, parse_request, read_body, receive_of
from tenantgate.edge.responses import RelayResponse, error_response, json_response
from tenantgate.metering.usage import usage_from_object

log = structlog.get_logger("tenantgate.access")


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def presented_key(request: Request) -> str | None:
    """The client's key: a Bearer token, else ``X-API-Key``. Another scheme in ``Authorization`` (a proxy's
    ``Basic`` credentials, say) does not hide a key sent in ``X-API-Key``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key")


class ProxyEndpoint:
    """An ASGI endpoint for one ``POST /v1/<endpoint>`` route."""

    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = new_request_id()
        trace = RequestTrace(self.endpoint)
        metrics = self.gateway.metrics
        metrics.request_started()
        watch = DisconnectWatch(receive)
        status = 499
        try:
            try:
                response = await self._handle(request, request_id, trace, watch)
            except GatewayError as error:
                response = error_response(error, request_id)
            except asyncio.CancelledError:
                if not watch.fired:
                    raise
                watch.absorb_cancel()
                return  # the client left before its answer: metered as 499 by the pipeline, nothing to send
            except Exception:  # a bug, not the client's fault: OpenAI-shaped 500, details only in the log
                log.exception("unhandled error", request_id=request_id)
                response = error_response(GatewayError("The gateway had an internal error."), request_id)
            finally:
                watch.stop()
            if watch.fired:
                watch.absorb_cancel()
                return
            status = response.status_code if isinstance(response, Response) else 200
            await response(scope, receive, send)
        finally:
            if not trace.metered:
                metrics.request_finished(
                    self.endpoint,
                    trace.model,
                    status,
                    time.perf_counter() - trace.started,
                    None,
                    0,
                    0,
                    0.0,
                    trace.tenant_id,
                )

    async def _handle(
        self, request: Request, request_id: str, trace: RequestTrace, watch: DisconnectWatch
    ) -> Response | RelayResponse:
        gw = self.gateway
        if gw.draining:
            raise ServiceUnavailable("The gateway is shutting down; retry on another replica.", code="draining")
        principal = await gw.auth.authenticate(presented_key(request))
        trace.tenant_id = principal.tenant_id
        parsed = parse_request(self.endpoint, await read_body(request, receive_of(request), gw.settings.max_body_bytes))
        if not gw.catalog.current.has(parsed.model) or not principal.may_use(parsed.model):
            # A model outside the key's allowlist answers exactly like one that does not exist (as OpenAI does).
            raise ModelNotFound(f"The model '{parsed.model}' does not exist.", param="model")
        trace.model = parsed.model
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is None or gw.idempotency is None:
            return await self._run(principal, parsed, request_id, None, trace, watch)
        claimed = await gw.idempotency.claim(request, idempotency_key, principal, parsed, request_id)
        if not isinstance(claimed, Claimed):
            return claimed
        try:
            response = await self._run(principal, parsed, request_id, claimed, trace, watch)
        except BaseException:
            await claimed.abandon()  # failed before an answer: not stored, a retry runs afresh
            raise
        if isinstance(response, Response):
            await claimed.store_response(response.status_code, dict(response.headers), bytes(response.body))
        return response

    async def _run(
        self,
        principal: Principal,
        parsed: ParsedRequest,
        request_id: str,
        claimed: Claimed | None,
        trace: RequestTrace,
        watch: DisconnectWatch,
    ) -> Response | RelayResponse:
        gw = self.gateway
        candidates = gw.forwarder.plan(gw.catalog.current, parsed.model, principal)
        dearest = max(candidates, key=lambda d: (d.output_price_per_mtok, d.input_price_per_mtok))
        routing = gw.config.models.get(parsed.model)
        per_choice = parsed.max_output_tokens or (
            routing.max_output_tokens if routing and routing.max_output_tokens else gw.config.defaults.max_output_tokens
        )
        ticket = await gw.admission.reserve(principal, dearest, parsed, per_choice * parsed.choices)
        if gw.admission.caps_output(ticket):
            parsed.output_cap = per_choice  # forwarded, so the upstream cannot generate more than was reserved
        meter = RequestMeter(gw, principal, parsed, candidates[0], request_id, ticket, trace)
        deadline = gw.forwarder.deadline(routing.timeout if routing else None)
        # From here until the upstream answers, a client that leaves cancels the work (armed only now, so no
        # reservation can be lost half-made to a cancellation). Not with an Idempotency-Key: then the answer is
        # finished and stored, so the client's retry (an edge reconnecting after a cut) replays it instead of
        # having the upstream generate it again.
        if claimed is None:
            watch.start()
        try:
            attempt = await gw.forwarder.open(candidates, parsed, deadline, principal.tenant_id)
        except GatewayError as error:
            await meter.finish(error.status, None)
            raise
        except asyncio.CancelledError:
            await meter.finish(499, None)  # the client left (or a drain ended it) while the upstream worked
            raise
        except BaseException:
            await meter.finish(500, None)  # a gateway fault: recorded as one, not as the client's doing
            raise
        finally:
            watch.stop()  # answered or failed: the rest runs to the end (streams watch the client themselves)
        parsed.forget_payloads()
        meter.deployment = attempt.deployment
        if not parsed.stream:
            return await self._whole(attempt, meter)
        relay, on_close = self._relay(attempt, meter)
        headers = {"x-request-id": meter.request_id, **meter.response_headers()}
        if claimed is None:
            return RelayResponse(relay.events(), on_close, headers, gw.streams)
        # Resumable: the generation runs on its own; this client (and any retry) follows the store.
        gw.spawn(claimed.generate(relay.events(), lambda: on_close(False)))
        follower = gw.idempotency.follow(claimed.scope, 0, claimed.owner)  # type: ignore[union-attr]
        return RelayResponse(follower, _no_cleanup, headers, gw.streams)

    async def _whole(self, attempt: Attempt, meter: RequestMeter) -> Response:
        attempt.done(self.gateway.forwarder.health)
        body = attempt.body or b""
        meter.first_byte()
        try:
            parsed_body = orjson.loads(body)
        except orjson.JSONDecodeError:
            await meter.finish(502, None)
            raise UpstreamError("The backend returned a response that is not JSON.") from None
        usage = usage_from_object(parsed_body)
        if usage is None:
            usage = await meter.estimate(answer=parsed_body, answer_size=len(body))
        await meter.finish(200, usage)
        body = rename_model(body, meter.parsed.model)
        return json_response(body, meter.request_id, extra=meter.response_headers())

    def _relay(self, attempt: Attempt, meter: RequestMeter) -> tuple[StreamRelay, Callable[[bool], Awaitable[None]]]:
        relay = StreamRelay(
            attempt.response,
            endpoint=self.endpoint,
            client_wants_usage=meter.parsed.client_wants_usage,
            first_chunk=attempt.first_chunk,
            model=meter.parsed.model,
            max_event_bytes=self.gateway.settings.max_upstream_body_bytes,
            secrets=(attempt.deployment.api_key,),
        )
        health = self.gateway.forwarder.health

        async def on_close(disconnected: bool) -> None:
            relay.close()
            attempt.done(health)
            outcome = relay.outcome
            if outcome.error is not None and not disconnected:
                health.record_failure(
                    attempt.deployment.backend_id, "5xx", outcome.error.message, tenant_id=meter.principal.tenant_id
                )
            if outcome.first_byte_at is not None:
                meter.first_byte(outcome.first_byte_at)
            status = 499 if disconnected else (outcome.error.status if outcome.error else 200)
            await meter.finish_stream(status, outcome.usage, outcome.events, outcome.size)

        return relay, on_close


async def _no_cleanup(_disconnected: bool) -> None:
    return None


def principal_models(gateway: Gateway, principal: Principal) -> list[str]:
    return [name for name in gateway.catalog.current.models() if principal.may_use(name)]


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tenantgate"}


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    request_id = new_request_id()
    try:
        principal = await gateway.auth.authenticate(presented_key(request))
    except GatewayError as error:
        return error_response(error, request_id)
    data = [_model_card(name) for name in principal_models(gateway, principal)]
    return json_response(orjson.dumps({"object": "list", "data": data}), request_id)


async def get_model(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    request_id = new_request_id()
    model = request.path_params["model"]
    try:
        principal = await gateway.auth.authenticate(presented_key(request))
        if model not in principal_models(gateway, principal):
            raise NotFound(f"The model '{model}' does not exist.", param="model", code="model_not_found")
    except GatewayError as error:
        return error_response(error, request_id)
    return json_response(orjson.dumps(_model_card(model)), request_id)


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
