import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Avg
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.models import User
from apps.catalog import selectors, services
from apps.catalog.access import access_app, access_app_owned
from apps.catalog.builtin import LANGUAGES
from apps.catalog.forms import AppForm, PublishForm, ReportForm, ReviewForm
from apps.catalog.models import Category, StoreApp
from apps.chat.models import Conversation
from apps.core.errors import Forbidden, NotFound, StoreError
from apps.knowledge.selectors import knowledge_file_list
from apps.registry.selectors import model_version_resolve

PAGE_SIZE = 12


def _page_app(access, request, slug) -> StoreApp:
    """The app that an access helper gives the user: its NotFound is the 404 page, its Forbidden the 403 page."""
    try:
        return access(user=request.user, slug=slug)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from exc


@require_GET
def home(request):
    query = request.GET.get("q", "").strip()
    if query:
        page = Paginator(selectors.app_search(query=query), PAGE_SIZE).get_page(request.GET.get("page"))
        return render(request, "catalog/search.html", {"query": query, "page": page})
    return render(request, "catalog/home.html", selectors.app_home_sections())


@require_GET
def category(request, slug):
    cat = get_object_or_404(Category, slug=slug)
    page = Paginator(selectors.app_catalog().filter(category=cat).order_by("-is_featured", "-published_at"), PAGE_SIZE)
    return render(request, "catalog/category.html", {"category": cat, "page": page.get_page(request.GET.get("page"))})


@require_GET
def creator(request, username):
    person = get_object_or_404(User, username=username, is_active=True)
    return render(request, "catalog/creator.html", {"person": person, "apps": selectors.app_list_for_creator(creator=person)})


def _lineage(app: StoreApp, user):
    try:
        version = model_version_resolve(reference=app.model_reference, user=app.creator)
    except StoreError:
        return None
    return {"version": version, "is_owner": user.is_authenticated and user.pk == app.creator_id}


@require_GET
def app_detail(request, slug):
    app = _page_app(access_app, request, slug)
    reviews = app.reviews.select_related("user")
    stats = StoreApp.objects.filter(pk=app.pk).aggregate(rating=Avg("reviews__rating"))
    my_review = reviews.filter(user=request.user).first() if request.user.is_authenticated else None
    conversations = (
        Conversation.objects.filter(app=app, user=request.user)[:30] if request.user.is_authenticated else []
    )
    context = {
        "app": app,
        "reviews": reviews[:20],
        "review_count": reviews.count(),
        "rating": stats["rating"],
        "conversation_label": selectors.conversation_count_label(app.conversations.count() + app.runs.filter(conversation=None).count()),
        "my_review": my_review,
        "review_form": ReviewForm(initial={"rating": my_review.rating, "text": my_review.text} if my_review else None),
        "report_form": ReportForm(),
        "conversations": conversations,
        "languages": LANGUAGES,
        "lineage": _lineage(app, request.user),
        "can_use": request.user.is_authenticated or app.is_builtin,
        "config": {
            "kind": app.kind,
            "runUrl": app.get_absolute_url() + "run",
            "loggedIn": request.user.is_authenticated,
        },
    }
    return render(request, "catalog/app_detail.html", context)


@login_required
@require_POST
def review_save(request, slug):
    app = _page_app(access_app, request, slug)
    form = ReviewForm(request.POST)
    if form.is_valid():
        try:
            services.review_save(app=app, user=request.user, rating=form.cleaned_data["rating"], text=form.cleaned_data["text"])
            messages.success(request, _("Thanks! Your review is saved."))
        except StoreError as exc:
            messages.error(request, exc.message)
    else:
        messages.error(request, _("Pick a rating from 1 to 5 stars."))
    return redirect(app.get_absolute_url() + "#reviews")


@login_required
@require_POST
def report(request, slug):
    app = _page_app(access_app, request, slug)
    form = ReportForm(request.POST)
    if form.is_valid():
        services.report_create(app=app, user=request.user, **form.cleaned_data)
        messages.success(request, _("Thank you. A moderator will look at this app."))
    else:
        messages.error(request, _("Choose a reason for the report."))
    return redirect(app.get_absolute_url())


@login_required
@require_POST
def remix(request, slug):
    app = _page_app(access_app, request, slug)
    try:
        copy = services.app_remix(app=app, user=request.user)
    except Forbidden as exc:  # a link-only app: the user sees it, but only public apps are remixed
        raise PermissionDenied(exc.message) from exc
    messages.success(request, _("Your remix is a private draft: change it and publish it when ready."))
    if not copy.instructions and app.instructions and app.creator_id != request.user.pk:
        messages.info(request, _("The creator's instructions stay theirs: write your own."))
    if copy.model_reference != app.model_reference:
        messages.warning(request, services.remix_model_notice(model=copy.model_reference))
    return redirect("catalog:build-edit", slug=copy.slug)


# --- Builder ----------------------------------------------------------------------------------------------
@require_GET
def avatar(request, name):
    """Uploaded avatars (PNG files the store wrote itself), served with a fixed type and no sniffing."""
    if not re.fullmatch(r"[0-9a-f]{32}\.png", name):
        raise Http404("No such avatar.")
    path = settings.MEDIA_ROOT / "avatars" / name
    if not path.is_file():
        raise Http404("No such avatar.")
    response = FileResponse(open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


@login_required
@require_GET
def build_list(request):
    return render(request, "catalog/build_list.html", {"apps": selectors.app_list_owned(user=request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def build_new(request):
    form = AppForm(
        request.POST or None, request.FILES or None, model_choices=selectors.builder_model_groups(user=request.user),
        initial={"kind": StoreApp.Kind.CHATBOT, "model_reference": request.GET.get("model")},  # from a finished job
    )
    if request.method == "POST" and form.is_valid():
        try:
            app = services.app_create(user=request.user, data=form.cleaned_data)
        except StoreError as exc:
            form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        else:
            messages.success(request, _("Draft saved. Try it in the preview, then publish it."))
            return redirect("catalog:build-edit", slug=app.slug)
    return render(request, "catalog/build_form.html", {"form": form, "app": None})


@login_required
@require_http_methods(["GET", "POST"])
def build_edit(request, slug):
    app = _page_app(access_app_owned, request, slug)
    form = AppForm(request.POST or None, request.FILES or None, instance=app, model_choices=selectors.builder_model_groups(user=request.user))
    if request.method == "POST" and form.is_valid():
        try:
            services.app_update(app=app, user=request.user, data=form.cleaned_data)
        except StoreError as exc:
            form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        else:
            messages.success(request, _("Saved."))
            return redirect("catalog:build-edit", slug=app.slug)
    app.refresh_from_db()
    return render(
        request,
        "catalog/build_form.html",
        {
            "form": form,
            "app": app,
            "publish_form": PublishForm(initial={"visibility": app.visibility}),
            "versions": app.versions.all()[:10],
            # What to share: the page's address (a link-only app's holds its token).
            "share_url": request.build_absolute_uri(app.get_absolute_url())
            if app.is_published and app.visibility != StoreApp.Visibility.PRIVATE else None,
            "config": {"kind": app.kind, "runUrl": f"/build/{app.slug}/preview", "loggedIn": True},
            "languages": LANGUAGES,
            "knowledge_files": knowledge_file_list(app=app),
            "knowledge_max_bytes": settings.KNOWLEDGE_MAX_FILE_BYTES,
        },
    )


@login_required
@require_POST
def build_publish(request, slug):
    app = _page_app(access_app_owned, request, slug)
    form = PublishForm(request.POST)
    if form.is_valid():
        services.app_publish(app=app, user=request.user, visibility=form.cleaned_data["visibility"])
        messages.success(request, _("Published: %(name)s is %(visibility)s.") % {"name": app.name, "visibility": app.get_visibility_display().lower()})
        return redirect(app.get_absolute_url())
    messages.error(request, _("Choose who can use the app."))
    return redirect("catalog:build-edit", slug=app.slug)


@login_required
@require_POST
def build_restore(request, slug, number):
    app = _page_app(access_app_owned, request, slug)
    try:
        services.app_version_restore(app=app, user=request.user, number=number)
    except StoreError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Restored the settings of version %(n)s.") % {"n": number})
    return redirect("catalog:build-edit", slug=app.slug)


@login_required
@require_POST
def build_delete(request, slug):
    app = _page_app(access_app_owned, request, slug)
    services.app_delete(app=app, user=request.user)
    messages.info(request, _("%(name)s was deleted.") % {"name": app.name})
    return redirect("catalog:build")
