"""Schemathesis hooks for tests/api/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS in the schemathesis process).

The generating operations are fuzzed too, with their work bounded: a fuzzed `max_tokens` of a million is as valid
as 16 but takes the rest of the context, seconds on a shared CPU, and the store's own bounds (the context left,
the n x num_beams budget, concurrent streams) have tests of their own in tests/chat. So numbers above the caps are
lowered (as DRF reads them: 1e6 and "1000000" are numbers too), a completion that names no length gets 16 tokens
instead of the rest of the context, and an app the fuzzer makes answers in at most 16 tokens. A wrong type still
goes out as generated.
"""

import schemathesis

CAPS = {"max_tokens": 16, "max_completion_tokens": 16, "n": 2, "num_beams": 2}
APP_WRITES = {("POST", "/api/v1/apps/"), ("PATCH", "/api/v1/apps/{slug}/")}
COMPLETIONS = {("POST", "/v1/chat/completions"), ("POST", "/v1/completions")}


@schemathesis.hook
def before_call(context, case, kwargs):
    if not isinstance(case.body, dict):
        return
    operation = (case.method.upper(), case.path)
    if operation in APP_WRITES and "max_tokens" not in case.body:
        case.body["max_tokens"] = CAPS["max_tokens"]  # not the app default of 256
    if operation in COMPLETIONS and case.body.get("max_tokens") is None and case.body.get("max_completion_tokens") is None:
        case.body["max_tokens"] = CAPS["max_tokens"]  # not the rest of the context
    for name, cap in CAPS.items():
        number = _number(case.body.get(name))
        if number is not None and number > cap:
            case.body[name] = cap


def _number(value) -> float | None:
    """What DRF's IntegerField reads as a number: an int, an integral float, a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None
