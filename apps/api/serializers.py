"""Input and output serializers of the native API (/api/v1). Input serializers only validate; the views pass
what they validated to a service. Output serializers only shape rows; they never write."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Avg, Count
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from apps.catalog.models import AppVersion, Category, Report, Review, StoreApp
from apps.chat.models import AppRun, Conversation, Message
from apps.knowledge.models import KnowledgeFile
from apps.registry.models import (
    ModelAlias,
    ModelAliasMove,
    ModelVersion,
    RegisteredModel,
)
from apps.registry.selectors import model_version_lineage
from apps.tuning.hyperparameters import HYPERPARAMETERS_HELP
from apps.tuning.models import (
    FineTuningJob,
    JobCheckpoint,
    JobEvent,
    JobMetric,
    TrainingFile,
)
from apps.tuning.selectors import finetune_job_estimated_finish

# --- Catalog ------------------------------------------------------------------------------------------------
_DATETIME = serializers.DateTimeField()  # DRF's own formatting (ISO 8601 in the current time zone), unbound


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["slug", "name", "description"]


class AppSerializer(serializers.ModelSerializer):
    model_id = serializers.SerializerMethodField(help_text="The id that /v1 takes as `model`.")
    category = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    creator = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                           help_text="Null for the store's built-in apps.")
    model = serializers.CharField(source="model_reference")
    instructions = serializers.SerializerMethodField(help_text="The app's system prompt: its creator alone sees it.")
    prompt_template = serializers.SerializerMethodField(help_text="Generator apps; its creator alone sees it.")
    secret_strings = serializers.SerializerMethodField(help_text="Strings an answer never contains; its creator alone sees them.")
    rating = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = StoreApp
        fields = [
            "slug", "model_id", "name", "short_description", "description", "kind", "category", "creator", "visibility",
            "is_builtin", "is_featured", "instructions", "prompt_template", "input_fields", "conversation_starters", "model",
            "temperature", "top_p", "max_tokens", "repetition_penalty", "remix_with_instructions", "secret_strings", "rating",
            "published_at",
            "created_at", "updated_at", "url",
        ]

    def _is_owner(self, app) -> bool:
        user = self.context["request"].user
        return app.creator_id is not None and app.creator_id == user.pk

    def get_model_id(self, app) -> str:
        return f"app:{app.address}"  # a link-only app's holds its token, as its `url` does

    @extend_schema_field({"type": "string", "nullable": True})
    def get_instructions(self, app):
        return app.instructions if self._is_owner(app) else None

    @extend_schema_field({"type": "string", "nullable": True})
    def get_prompt_template(self, app):
        return app.prompt_template if self._is_owner(app) else None

    @extend_schema_field({"type": "array", "items": {"type": "string"}, "nullable": True})
    def get_secret_strings(self, app):
        return app.secret_strings if self._is_owner(app) else None

    @extend_schema_field({"type": "object", "properties": {"average": {"type": "number", "nullable": True},
                                                           "count": {"type": "integer"}}})
    def get_rating(self, app):
        if hasattr(app, "review_count"):  # annotated by the catalog selectors
            average, count = app.rating, app.review_count
        else:
            found = app.reviews.aggregate(average=Avg("rating"), count=Count("id"))
            average, count = found["average"], found["count"]
        return {"average": round(average, 2) if average is not None else None, "count": count}

    def get_url(self, app) -> str:
        return self.context["request"].build_absolute_uri(app.get_absolute_url())

    def to_representation(self, app):
        # Written out: the catalog list serializes 27 fields a row on every read, and DRF's generic walk (building
        # the fields per request, then get_attribute and to_representation for each) was a third of the request.
        # The declared fields above stay for the schema; tests/api/test_app_serializer.py checks that this gives
        # exactly what DRF's generic walk gives.
        owner = self._is_owner(app)
        when = _DATETIME.to_representation
        return {
            "slug": str(app.slug), "model_id": self.get_model_id(app), "name": str(app.name),
            "short_description": str(app.short_description), "description": str(app.description), "kind": str(app.kind),
            "category": app.category.slug if app.category_id is not None else None,
            "creator": app.creator.username if app.creator_id is not None else None,
            "visibility": str(app.visibility), "is_builtin": bool(app.is_builtin), "is_featured": bool(app.is_featured),
            "instructions": app.instructions if owner else None,
            "prompt_template": app.prompt_template if owner else None,
            "input_fields": app.input_fields, "conversation_starters": app.conversation_starters,
            "model": str(app.model_reference), "temperature": float(app.temperature), "top_p": float(app.top_p),
            "max_tokens": int(app.max_tokens), "repetition_penalty": float(app.repetition_penalty),
            "remix_with_instructions": bool(app.remix_with_instructions),
            "secret_strings": app.secret_strings if owner else None,
            "rating": self.get_rating(app), "published_at": when(app.published_at) if app.published_at else None,
            "created_at": when(app.created_at), "updated_at": when(app.updated_at), "url": self.get_url(app),
        }


class AppInputSerializer(serializers.ModelSerializer):
    """Create (every required field) or update (PATCH: any of them). Visibility changes through `publish`."""

    category = serializers.SlugRelatedField(slug_field="slug", queryset=Category.objects.all(), required=False, allow_null=True)
    # Translators are built in (their form is special); users build chatbots and generators, as in the builder.
    kind = serializers.ChoiceField(choices=[StoreApp.Kind.CHATBOT, StoreApp.Kind.GENERATOR], required=False)
    model = serializers.CharField(source="model_reference", max_length=300, required=False,
                                  help_text="A model reference: `<id>`, `<id>@<alias>` or `<id>@v<N>`.")
    conversation_starters = serializers.ListField(child=serializers.CharField(max_length=200), max_length=6, required=False)
    secret_strings = serializers.ListField(child=serializers.CharField(max_length=200), max_length=20, required=False,
                                           help_text="Strings an answer must never contain (the output filter stops it).")

    class Meta:
        model = StoreApp
        fields = [
            "name", "short_description", "description", "kind", "category", "instructions", "prompt_template",
            "conversation_starters", "model", "temperature", "top_p", "max_tokens", "repetition_penalty",
            "remix_with_instructions", "secret_strings",
        ]


class PublishSerializer(serializers.Serializer):
    visibility = serializers.ChoiceField(choices=StoreApp.Visibility.choices)


class AppVersionSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = AppVersion
        fields = ["number", "settings", "created_by", "created_at"]


class ReviewSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Review
        fields = ["id", "app", "user", "rating", "text", "created_at", "updated_at"]


class ReviewInputSerializer(serializers.Serializer):
    rating = serializers.IntegerField(min_value=1, max_value=5)
    text = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ReportInputSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    details = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


# --- Runs and conversations ---------------------------------------------------------------------------------
@extend_schema_serializer(examples=[OpenApiExample("A chatbot's turn", request_only=True, value={"message": "Say hello."})])
class AppRunInputSerializer(serializers.Serializer):
    """The app's inputs, by kind: a chatbot's `message` (and `conversation` to go on with one), a generator's
    `fields`, a translator's `text`, `source` and `target`."""

    message = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    conversation = serializers.IntegerField(required=False, allow_null=True)
    regenerate = serializers.BooleanField(required=False, default=False)
    fields = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=20000), required=False)
    text = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    source = serializers.CharField(required=False, allow_blank=True, max_length=40)
    target = serializers.CharField(required=False, allow_blank=True, max_length=40)
    stream = serializers.BooleanField(required=False, default=False, help_text="Server-sent events instead of one JSON answer.")


class SourceSerializer(serializers.Serializer):
    """A knowledge passage the answer was given, cited as [index]: the file's name and the passage, nothing more."""

    index = serializers.IntegerField()
    file = serializers.CharField()
    heading = serializers.CharField(allow_blank=True)
    text = serializers.CharField()
    chunk = serializers.IntegerField()


class AppRunResultSerializer(serializers.Serializer):
    app = serializers.CharField()
    text = serializers.CharField()
    finish_reason = serializers.CharField()
    conversation = serializers.IntegerField(allow_null=True)
    run = serializers.IntegerField(allow_null=True, help_text="The run's id: what /api/v1/feedback/ rates (a generator's "
                                   "or translator's answer).")
    notice = serializers.CharField(allow_null=True)
    usage = serializers.DictField(child=serializers.IntegerField())
    sources = SourceSerializer(many=True, help_text="The passages of the app's knowledge files in the prompt.")


class KnowledgeFileSerializer(serializers.ModelSerializer):
    """A knowledge file as its app's creator sees it: what it is and how its indexing went, never its content."""

    class Meta:
        model = KnowledgeFile
        fields = ["id", "name", "content_type", "size", "sha256", "status", "message", "progress", "pages",
                  "chunk_count", "token_count", "created_at", "updated_at", "indexed_at"]


class KnowledgeFileInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="Plain text, Markdown, HTML or PDF (told by its content). A file of the "
                                           "same name on the app is replaced and indexed again.")


class AppRunSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True,
                                       help_text="Null for a run of a model on /v1.")
    api_key = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True,
                                           help_text="Null for a run from the pages.")

    class Meta:
        model = AppRun
        fields = ["id", "app", "model", "api_key", "conversation", "prompt_tokens", "completion_tokens", "finish_reason", "created_at"]


class ConversationSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "app", "title", "created_at", "updated_at"]


class ConversationInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=120)


class ConversationMessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = ["id", "role", "content", "finish_reason", "created_at"]


# --- Customization ------------------------------------------------------------------------------------------
class TrainingFileSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")

    class Meta:
        model = TrainingFile
        fields = ["id", "filename", "purpose", "bytes", "format", "status", "problems", "example_count", "token_count",
                  "preview", "label_counts", "created_at"]


class TrainingFileInputSerializer(serializers.Serializer):
    file = serializers.FileField()


class JobSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    model = serializers.CharField(source="base_reference")
    training_file = serializers.SlugRelatedField(slug_field="public_id", read_only=True)
    validation_file = serializers.SlugRelatedField(slug_field="public_id", read_only=True, allow_null=True)
    fine_tuned_model = serializers.CharField(allow_null=True)
    progress = serializers.FloatField()
    error = serializers.SerializerMethodField()
    estimated_finish = serializers.SerializerMethodField(
        help_text="Unix seconds when the running job should end (from the pace of its last steps); null when unknown.")
    metadata = serializers.DictField(child=serializers.CharField(), help_text="Up to 16 string pairs, as OpenAI's.")
    register_as = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True,
        help_text="The model whose next version the result becomes (null: a model of its own).")
    result_version = serializers.CharField(source="result_version.reference", read_only=True, allow_null=True, default=None,
                                           help_text="The exact version the job registered, `<id>@v<N>`.")
    evaluation = serializers.JSONField(
        read_only=True,
        help_text="Base against tuned on the held-out data (a tenth of the training file when there is no validation "
                  "file): split, base/tuned loss and exact_match, current (the version latest named, measured on the "
                  "same data), pairs (prompt, expected, base, tuned answers) and gate (passed, reason) for the next "
                  "version of a model. Empty until the job succeeds.")

    class Meta:
        model = FineTuningJob
        fields = [
            "id", "status", "model", "method", "training_file", "validation_file", "hyperparameters", "suffix", "seed",
            "estimate", "step", "total_steps", "progress", "trained_tokens", "last_checkpoint_step", "val_loss_before",
            "val_loss_after", "attempts", "cancel_requested", "fine_tuned_model", "error", "created_at", "started_at",
            "finished_at", "estimated_finish", "metadata", "register_as", "result_version", "evaluation",
        ]

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_estimated_finish(self, job):
        return finetune_job_estimated_finish(job=job)

    @extend_schema_field({"type": "object", "nullable": True,
                          "properties": {"code": {"type": "string"}, "message": {"type": "string"}}})
    def get_error(self, job):
        return {"code": job.error_code, "message": job.error_message} if job.error_code else None

    def to_representation(self, job):
        data = super().to_representation(job)
        data["fine_tuned_model"] = job.fine_tuned_model or None
        return data


class JobInputSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=300, default=lambda: settings.BASE_MODEL_ID,
                                  help_text="The base: a model reference (the store's base model by default).")
    training_file = serializers.CharField(max_length=40)
    validation_file = serializers.CharField(max_length=40, required=False, allow_null=True)
    method = serializers.ChoiceField(choices=FineTuningJob.Method.choices, default=FineTuningJob.Method.LORA)
    hyperparameters = serializers.DictField(required=False, help_text=HYPERPARAMETERS_HELP)
    suffix = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1)
    metadata = serializers.DictField(required=False, allow_null=True,
                                     help_text="Up to 16 pairs: keys of at most 64 characters, string values of at most 512.")
    register_as = serializers.CharField(
        max_length=255, required=False, allow_null=True, allow_blank=True,
        help_text="One of your models: the result becomes its next version (and `latest` moves to it) instead of a "
                  "model of its own.")


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobEvent
        fields = ["id", "level", "message", "data", "created_at"]


class JobCheckpointSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.registered_model.name",
                                  help_text="The checkpoint's model id (`ft:...:ckpt-step-<N>`): callable like any model.")

    class Meta:
        model = JobCheckpoint
        fields = ["step", "epoch", "model", "metrics", "created_at"]


class JobMetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobMetric
        fields = ["step", "train_loss", "val_loss", "learning_rate", "tokens_per_second", "created_at"]


# --- Registry -----------------------------------------------------------------------------------------------
class RegisteredModelSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True,
                                         help_text="Null for the store's own models.")
    aliases = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "owner", "visibility", "description", "aliases", "created_at", "updated_at"]

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_aliases(self, model) -> dict:
        return {alias.name: alias.version.number for alias in model.aliases.all()}


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name")
    reference = serializers.CharField()
    base = serializers.SerializerMethodField(help_text="Lineage: the version this one was trained from.")
    lineage = serializers.SerializerMethodField(
        help_text="The whole chain, root first: base -> first fine-tune -> ... -> this version.")
    aliases = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = ModelVersion
        fields = ["model", "number", "reference", "status", "kind", "base", "lineage", "aliases", "size_bytes", "checksums",
                  "metrics", "source", "created_by_job", "created_at"]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_base(self, version):
        return version.base_version.reference if version.base_version_id else None

    def get_lineage(self, version) -> list[str]:
        return [v.reference for v in model_version_lineage(version=version)]


class ModelAliasSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number")

    class Meta:
        model = ModelAlias
        fields = ["name", "version", "updated_at"]


class ModelAliasInputSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The version number the alias will point at.")


class ModelAliasMoveSerializer(serializers.ModelSerializer):
    from_version = serializers.IntegerField(source="from_version.number", allow_null=True)
    to_version = serializers.IntegerField(source="to_version.number")
    moved_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = ModelAliasMove
        fields = ["id", "alias", "from_version", "to_version", "moved_by", "moved_at"]


# --- Account ------------------------------------------------------------------------------------------------
class UsageRowSerializer(serializers.Serializer):
    name = serializers.CharField()
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()


class UsageSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    by_app_or_model = UsageRowSerializer(many=True)
    by_key = UsageRowSerializer(many=True)
