from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tuning", "0006_classification"),
    ]

    operations = [
        migrations.AddField(
            model_name="finetuningjob",
            name="evaluation",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
