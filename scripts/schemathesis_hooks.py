"""Checks schemathesis runs against the API beside its own (loaded by scripts/check-api).

- Every 400, 408 and 413 names the request field at fault in `error.field`.
- A request the document calls valid is accepted. This replaces schemathesis's
  `positive_data_acceptance` with the exceptions the document states in prose, which no schema
  can express: a rocket that was never seen is a 404 (only on the `{channel}` routes); a
  `cursor` the API did not issue is a 400 that names `cursor` (a cursor is a token the API
  writes, not a format); and `stalled=true` with a `sortBy` other than `pendingMessages` is a 400 that
  names `stalled`.
"""

import schemathesis

NAMED_FIELD_STATUSES = {400, 408, 413}


def error_field(response):
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    return error.get("field") if isinstance(error, dict) else None


@schemathesis.check
def errors_name_their_field(ctx, response, case):
    if response.status_code in NAMED_FIELD_STATUSES:
        field = error_field(response)
        if not isinstance(field, str) or not field:
            raise AssertionError(
                f"a {response.status_code} that names no field: {response.text[:300]}"
            )


@schemathesis.check
def valid_requests_are_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    status = response.status_code
    if 200 <= status < 300 or status == 429:
        return
    path = case.operation.path
    if status == 404 and "{channel}" in path:
        return
    query = case.query or {}
    if status == 400 and query.get("cursor") is not None and error_field(response) == "cursor":
        return
    if status == 400 and str(query.get("stalled")).lower() == "true" \
            and query.get("sortBy", "pendingMessages") != "pendingMessages" \
            and error_field(response) == "stalled":
        return
    # openapi.yaml: channelPrefix lists by channel, so with another sortBy, or with stalled,
    # it is a 400 naming it.
    if status == 400 and query.get("channelPrefix") is not None \
            and (query.get("sortBy", "channel") != "channel"
                 or str(query.get("stalled")).lower() == "true") \
            and error_field(response) == "channelPrefix":
        return
    raise AssertionError(f"a valid request to {case.operation.label} got {status}: {response.text[:300]}")
