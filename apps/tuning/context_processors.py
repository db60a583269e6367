"""The site's notice that a fine-tuning job ended (an email goes out too); cleared when the owner looks at it."""

from apps.tuning.selectors import finished_job_notices


def finished_jobs(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"finished_jobs": finished_job_notices(user=user)}
