"""The store's own REST API (/api/v1): apps, reviews, runs, conversations, files, jobs, models, usage.

Thin views over the same selectors and services as the pages: validate with an input serializer, call one
service or selector, shape the answer with an output serializer. Every queryset is scoped to what the caller may
see, and another user's object is a 404. Errors have one shape, `{"error": {"message", "type", "param", "code"}}`.
"""

