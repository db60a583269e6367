"""/api/v1: the caller's comparisons, their votes and their leaderboard. All the caller's own: another user's
comparison is a 404, for reading and for voting on it."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.native.base import StoreAPIMixin
from apps.compare import selectors, services
from apps.compare.models import Answer, Comparison, Vote


class AnswerSerializer(serializers.ModelSerializer):
    settings = serializers.JSONField(help_text="Public settings only (model, sampling); never an app's instructions.")

    class Meta:
        model = Answer
        fields = ["side", "entry", "reference", "label", "settings", "text", "finish_reason", "started_at", "finished_at"]


class ComparisonSerializer(serializers.ModelSerializer):
    answers = AnswerSerializer(many=True, read_only=True)
    vote = serializers.SerializerMethodField()

    class Meta:
        model = Comparison
        fields = ["id", "kind", "messages", "options", "answers", "vote", "created_at"]

    def get_vote(self, comparison) -> str | None:
        vote = getattr(comparison, "vote", None)
        return vote.outcome if vote is not None else None


class VoteSerializer(serializers.ModelSerializer):
    comparison = serializers.PrimaryKeyRelatedField(read_only=True)
    a = serializers.SerializerMethodField(help_text="The entry on side A: a model version or `app:<slug>`.")
    b = serializers.SerializerMethodField(help_text="The entry on side B.")

    class Meta:
        model = Vote
        fields = ["id", "comparison", "a", "b", "outcome", "created_at"]

    def _entry(self, vote, side) -> str:
        return next(a.entry for a in vote.comparison.answers.all() if a.side == side)

    def get_a(self, vote) -> str:
        return self._entry(vote, "a")

    def get_b(self, vote) -> str:
        return self._entry(vote, "b")


class VoteInputSerializer(serializers.Serializer):
    comparison = serializers.IntegerField(help_text="One of your comparisons whose two answers have ended.")
    outcome = serializers.ChoiceField(choices=Vote.Outcome.choices, help_text="`a`, `b`, `tie` or `both_bad`.")


class LeaderboardRowSerializer(serializers.Serializer):
    rank = serializers.IntegerField(help_text="Within its kind.")
    entry = serializers.CharField()
    label = serializers.CharField()
    kind = serializers.CharField(help_text="`model` or an app kind: entries meet only entries of their kind.")
    rating = serializers.FloatField(help_text="Elo, 1000 at the start, K=32, votes applied in the order cast.")
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    ties = serializers.IntegerField(help_text="Ties and “both are bad” votes (both count as draws).")
    votes = serializers.IntegerField()


class ComparisonViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The caller's side-by-side comparisons (made on /compare/): both answers with their public settings."""

    serializer_class = ComparisonSerializer
    lookup_value_regex = "[0-9]+"

    def get_queryset(self):
        return selectors.comparison_list(user=self.request.user)

    def list(self, request):
        return self.paged(self.get_queryset(), ComparisonSerializer, ordering=("-created_at", "-id"))

    @extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)])
    def retrieve(self, request, pk):
        return Response(ComparisonSerializer(selectors.access_comparison(user=request.user, comparison_id=pk)).data)


class VoteViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The caller's votes; a vote is cast once per comparison, when both its answers have ended."""

    serializer_class = VoteSerializer
    parser_classes = [JSONParser]

    def get_queryset(self):
        return selectors.vote_list(user=self.request.user)

    def list(self, request):
        return self.paged(self.get_queryset(), VoteSerializer, ordering=("-created_at", "-id"))

    @extend_schema(request=VoteInputSerializer, responses={201: VoteSerializer})
    def create(self, request):
        serializer = VoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        comparison = selectors.access_comparison(user=request.user, comparison_id=serializer.validated_data["comparison"])
        vote = services.vote_cast(user=request.user, comparison=comparison, outcome=serializer.validated_data["outcome"])
        return Response(VoteSerializer(vote).data, status=status.HTTP_201_CREATED)


class LeaderboardView(StoreAPIMixin, APIView):
    """The caller's leaderboard: Elo ratings over their own votes (apps/compare/rating.py)."""

    @extend_schema(responses=LeaderboardRowSerializer(many=True))
    def get(self, request):
        rows = selectors.leaderboard(user=request.user)
        return Response({"results": LeaderboardRowSerializer(rows, many=True).data})
