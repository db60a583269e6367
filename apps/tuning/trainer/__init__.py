"""Fine-tuning, as plain ML code: no Django here. Runs from a shell (python -m apps.tuning.trainer CONFIG.json)
and in a test with a tiny model; the Celery task supervises it in a child process."""
