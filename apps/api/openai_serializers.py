"""Input of the OpenAI-compatible endpoints, validated field by field (a bad field is a 400 naming it)."""

from dataclasses import fields

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from apps.inference.types import SamplingParams


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
class StopField(serializers.Field):
    def to_internal_value(self, data):
        if data is None:
            return ()
        items = [data] if isinstance(data, str) else data
        if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) or len(items) > 4:
            raise serializers.ValidationError("must be a non-empty string or a list of up to 4 non-empty strings")
        return tuple(items)

    def to_representation(self, value):
        return list(value)


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["system", "developer", "user", "assistant"])
    content = serializers.JSONField()
    name = serializers.CharField(required=False)

    def validate_content(self, value):
        # A string, or OpenAI's list of parts of which only text parts are understood here.
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(p, dict) for p in value):
            if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in value):
                raise serializers.ValidationError("only text content parts are supported")
            return "".join(p["text"] for p in value)
        if value is None:
            return ""
        raise serializers.ValidationError("must be a string or a list of text parts")

    def validate(self, attrs):
        if attrs["role"] == "developer":  # OpenAI's newer name for the system role
            attrs["role"] = "system"
        attrs.pop("name", None)
        return attrs


class SamplingSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=300)
    temperature = serializers.FloatField(required=False, default=1.0, min_value=0, max_value=2, allow_null=True)
    top_p = serializers.FloatField(required=False, default=1.0, min_value=0, max_value=1, allow_null=True)
    max_tokens = serializers.IntegerField(required=False, min_value=1, allow_null=True)
    stop = StopField(required=False, default=())
    n = serializers.IntegerField(required=False, default=1, min_value=1, max_value=8, allow_null=True)
    seed = serializers.IntegerField(required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False, allow_null=True)
    stream_options = serializers.DictField(required=False, allow_null=True)
    # Extensions that vLLM and llama.cpp's server also accept (the openai client sends them with extra_body).
    top_k = serializers.IntegerField(required=False, default=0, min_value=0)
    repetition_penalty = serializers.FloatField(required=False, default=1.0, min_value=0.01, max_value=10)
    no_repeat_ngram_size = serializers.IntegerField(required=False, default=0, min_value=0, max_value=20)
    num_beams = serializers.IntegerField(required=False, default=1, min_value=1, max_value=8)
    ignore_eos = serializers.BooleanField(required=False, default=False)

    def validate_top_p(self, value):
        if value is not None and value <= 0:
            raise serializers.ValidationError("must be greater than 0")
        return value

    def sampling_params(self) -> SamplingParams:
        d = self.validated_data
        return SamplingParams(
            max_tokens=d.get("max_tokens"),
            temperature=1.0 if d.get("temperature") is None else d["temperature"],
            top_p=1.0 if d.get("top_p") is None else d["top_p"],
            top_k=d["top_k"],
            stop=d["stop"],
            seed=d.get("seed"),
            repetition_penalty=d["repetition_penalty"],
            no_repeat_ngram_size=d["no_repeat_ngram_size"],
            num_beams=d["num_beams"],
            ignore_eos=d["ignore_eos"],
        )

    def sampling_overrides(self) -> dict:
        """The sampling settings the caller set in the body (null counts as not set), to go over an app's own."""
        body = self.initial_data if isinstance(self.initial_data, dict) else {}
        given = {name for name, value in body.items() if value is not None}
        if "max_completion_tokens" in given:
            given.add("max_tokens")
        params = self.sampling_params()
        return {f.name: getattr(params, f.name) for f in fields(SamplingParams) if f.name in given}

    @property
    def include_usage(self) -> bool:
        return bool((self.validated_data.get("stream_options") or {}).get("include_usage"))


@extend_schema_serializer(examples=[OpenApiExample(
    "A short answer", request_only=True,
    value={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16},
)])
class ChatCompletionSerializer(SamplingSerializer):
    messages = MessageSerializer(many=True, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(required=False, min_value=1, allow_null=True)

    def validate(self, attrs):
        if attrs.get("max_completion_tokens") is not None:
            attrs["max_tokens"] = attrs["max_completion_tokens"]
        return attrs


@extend_schema_serializer(examples=[OpenApiExample(
    "A short continuation", request_only=True,
    value={"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 16},
)])
class CompletionSerializer(SamplingSerializer):
    prompt = serializers.JSONField()
    max_tokens = serializers.IntegerField(required=False, default=16, min_value=1, allow_null=True)  # OpenAI's default

    def validate_prompt(self, value):
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str):
            raise serializers.ValidationError("must be a string (one prompt per request)")
        return value
