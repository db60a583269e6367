"""/api/v1/feedback: the caller's ratings of answers (create, read, change, delete, list) and the export of their
rated answers as a training file. The pages' thumbs use this API too (the browser's session, with CSRF)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.response import Response

from apps.api.native.base import StoreAPIMixin
from apps.api.serializers import TrainingFileSerializer
from apps.feedback import selectors, services
from apps.feedback.models import Feedback


class FeedbackSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    message = serializers.IntegerField(source="message_id", allow_null=True, help_text="The rated chat message.")
    run = serializers.IntegerField(source="run_id", allow_null=True, help_text="The rated run of a generator or translator.")
    system = serializers.CharField(help_text="A run's instructions, kept only for the rater's own apps and the built-ins.")
    prompt = serializers.CharField(help_text="A run's user turn as kept (another creator's template left out).")
    answer = serializers.CharField(help_text="A run's answer as it was given.")

    class Meta:
        model = Feedback
        fields = ["id", "app", "message", "run", "rating", "correction", "system", "prompt", "answer", "created_at", "updated_at"]


class FeedbackInputSerializer(serializers.Serializer):
    message = serializers.IntegerField(required=False, help_text="A chat message of the caller's (an assistant's answer).")
    run = serializers.IntegerField(required=False, help_text="A run of the caller's, of a generator or translator app.")
    rating = serializers.CharField(help_text="`up` or `down`.")
    correction = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                       help_text="The better answer (at most 8,000 characters).")
    inputs = serializers.DictField(required=False, help_text="A run's first rating: the inputs it ran with (as for "
                                   "/apps/{slug}/runs/: `fields`, or `text`, `source` and `target`).")
    answer = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                   help_text="A run's first rating: its answer, as it came.")


class FeedbackUpdateSerializer(serializers.Serializer):
    rating = serializers.CharField(required=False)
    correction = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False,
                                       help_text="An empty correction removes it.")


class FeedbackExportSerializer(serializers.Serializer):
    file = TrainingFileSerializer()
    examples = serializers.IntegerField()
    customize_url = serializers.CharField(help_text="The customize page with the file chosen for a job.")


class FeedbackViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Thumbs up or down on the caller's answers, with an optional better answer: their own, for their own
    training data. An app's creator sees only the counts on their app."""

    serializer_class = FeedbackSerializer
    parser_classes = [JSONParser]
    cursor_ordering = ("-updated_at", "-id")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Feedback.objects.none()
        params = self.request.query_params
        return selectors.feedback_list(user=self.request.user, conversation=params.get("conversation"), app=params.get("app"))

    @extend_schema(parameters=[OpenApiParameter("conversation", int, description="A conversation's id."),
                               OpenApiParameter("app", str, description="An app slug.")])
    def list(self, request):
        return super().list(request)

    @extend_schema(request=FeedbackInputSerializer, responses={201: FeedbackSerializer, 200: FeedbackSerializer},
                   description="Rate an answer (201); rating it again changes the rating (200).")
    def create(self, request):
        serializer = FeedbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback, created = services.feedback_rate(user=request.user, **serializer.validated_data)
        return Response(FeedbackSerializer(feedback).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def retrieve(self, request, pk):
        return Response(FeedbackSerializer(selectors.access_feedback(user=request.user, feedback_id=pk)).data)

    @extend_schema(request=FeedbackUpdateSerializer, responses=FeedbackSerializer)
    def partial_update(self, request, pk):
        feedback = selectors.access_feedback(user=request.user, feedback_id=pk)
        serializer = FeedbackUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(FeedbackSerializer(services.feedback_update(feedback=feedback, **serializer.validated_data)).data)

    def destroy(self, request, pk):
        services.feedback_delete(feedback=selectors.access_feedback(user=request.user, feedback_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={201: FeedbackExportSerializer})
    @action(detail=False, methods=["post"])
    def export(self, request):
        """The caller's rated answers as a chat JSONL training file (validated like an upload); 400 when too few."""
        training_file, examples = services.feedback_export(user=request.user)
        return Response({"file": TrainingFileSerializer(training_file).data, "examples": examples,
                         "customize_url": services.customize_url(training_file)}, status=status.HTTP_201_CREATED)
