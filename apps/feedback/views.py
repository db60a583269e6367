"""The feedback page: the user's rated answers, and the one click that turns them into a training file."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import StoreError
from apps.feedback import selectors, services
from apps.tuning.trainer.data import MIN_EXAMPLES

PAGE_ITEMS = 200


@login_required
@require_GET
def feedback_page(request):
    items = selectors.feedback_list(user=request.user).select_related("message__conversation")[:PAGE_ITEMS]
    return render(request, "feedback/page.html", {
        "items": items,
        "usable": len(selectors.feedback_examples(user=request.user)),
        "needed": MIN_EXAMPLES,
    })


@login_required
@require_POST
def feedback_export_view(request):
    try:
        training_file, examples = services.feedback_export(user=request.user)
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect("feedback:page")
    messages.success(request, _("Exported %(n)s rated answers as %(file)s. It is being checked; choose the settings and "
                                "start the job.") % {"n": examples, "file": training_file.filename})
    return redirect(services.customize_url(training_file))
