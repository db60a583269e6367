"""Schemathesis hooks for tests/api/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS in the schemathesis process).

The generating operations are fuzzed too, with their work bounded: a fuzzed `max_tokens` of a million is as valid
as 16 but takes the rest of the context, seconds on a shared CPU, and the store's own bounds (the context left,
the n x num_beams budget, concurrent streams) have tests of their own in tests/chat. So numbers above the caps are
lowered, and an app the fuzzer makes answers in at most 16 tokens; a wrong type still goes out as generated.
"""

import schemathesis

CAPS = {"max_tokens": 16, "max_completion_tokens": 16, "n": 2, "num_beams": 2}
APP_WRITES = {("POST", "/api/v1/apps/"), ("PATCH", "/api/v1/apps/{slug}/")}


@schemathesis.hook
def before_call(context, case, kwargs):
    if not isinstance(case.body, dict):
        return
    if (case.method.upper(), case.path) in APP_WRITES and "max_tokens" not in case.body:
        case.body["max_tokens"] = CAPS["max_tokens"]  # not the app default of 256
    for name, cap in CAPS.items():
        value = case.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            case.body[name] = cap
