import pytest


@pytest.fixture
def engine_requests(store, monkeypatch):
    """Every generation request the run service hands the (real, tiny) engine, in order."""
    from apps.chat import services as run_services
    from apps.inference import services as inference

    seen = []
    engine = inference.engine_get()

    class Watched:
        def stream(self, request):
            seen.append(request)
            return engine.stream(request)

    monkeypatch.setattr(run_services, "engine_get", lambda: Watched())
    return seen
