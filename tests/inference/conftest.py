import pytest

from apps.inference.local import LocalEngine
from apps.inference.types import GenerationRequest, ModelSpec, SamplingParams


@pytest.fixture(scope="session")
def engine():
    eng = LocalEngine(dtype="float32", max_batch=16)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def tiny_spec(tiny_hf_dir) -> ModelSpec:
    return ModelSpec(key="tiny@v1", path=str(tiny_hf_dir))


def chat(spec, content="Tell me about the sea.", **params) -> GenerationRequest:
    return GenerationRequest(model=spec, messages=[{"role": "user", "content": content}], params=SamplingParams(**params))
