from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.core.errors import StoreError
from apps.registry.model_import import STAGES, model_import


class Command(BaseCommand):
    help = (
        "Register your own base model (staff): a Hugging Face folder with safetensors, or a GGUF file (llama "
        "architecture), with its tokenizer, chat template and a model card. It becomes a public model that serves, "
        "fine-tunes and appears in the builder like the built-in base. Pickled weights, custom code (auto_map), "
        "unknown architectures and models larger than the engine's cache are refused."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path, help="a Hugging Face model folder or a .gguf file")
        parser.add_argument("--id", dest="model_id", help="registry id (default: made of the folder or file name)")
        parser.add_argument("--name", default="", help="a readable name for the model card (default: the id)")
        parser.add_argument("--description", default="", help="more text for the model card and the model page")

    def handle(self, *args, path, model_id=None, name="", description="", verbosity=1, **options):
        bar = tqdm(total=len(STAGES), desc="import model", unit="step", disable=verbosity == 0)

        def progress(stage: str) -> None:
            bar.set_postfix_str(stage)
            if stage in STAGES:
                bar.n = STAGES.index(stage) + 1  # stages come in order; a GGUF file skips none, a folder "convert"
                bar.refresh()

        try:
            version = model_import(path=path, model_id=model_id, name=name, description=description,
                                   progress=progress)
        except StoreError as exc:
            raise CommandError(exc.message) from exc
        finally:
            bar.close()
        self.stdout.write(self.style.SUCCESS(f"Imported {version.reference} at {version.path}"))
