"""The store's three built-in apps. `seed_store` writes them (idempotent); `make run` calls it."""

from django.utils.translation import gettext_lazy as _

LANGUAGES = [
    "English", "Chinese (Simplified)", "Spanish", "French", "German", "Italian", "Portuguese", "Japanese",
    "Korean", "Russian", "Arabic", "Hindi", "Dutch", "Turkish",
]
GENERATOR_KINDS = ["article", "story", "poem", "product description", "code"]
GENERATOR_TONES = ["neutral", "friendly", "formal", "funny", "persuasive"]
# Length choice → (words asked for, most tokens allowed).
GENERATOR_LENGTHS = {"short": (60, 160), "medium": (150, 320), "long": (300, 640)}

CATEGORIES = [
    ("writing", _("Writing"), _("Articles, stories, poems and copy")),
    ("productivity", _("Productivity"), _("Assistants that get things done")),
    ("language", _("Language"), _("Translation and language learning")),
    ("programming", _("Programming"), _("Code, explained and written")),
    ("education", _("Education"), _("Tutors and explainers")),
    ("fun", _("Fun"), _("Games, jokes and stories")),
]

BUILTIN_APPS = [
    {
        "slug": "text-generator",
        "name": "Text Generator",
        "kind": "generator",
        "category": "writing",
        "short_description": "Articles, stories, poems, product descriptions and code, in the tone and length you pick.",
        "description": (
            "Say what to write, pick the kind of text, its tone and its length, and watch it being written. "
            "Runs on SmolLM2-135M-Instruct, a small open model: short texts work best."
        ),
        "instructions": (
            "You are a skilled writer. Write exactly the kind of text requested, in the requested tone and length. "
            "Output only the text itself: no title unless asked, no notes, no preamble."
        ),
        "prompt_template": "Write a {kind} about the following.\n\n{topic}\n\nTone: {tone}. Length: about {words} words.",
        "input_fields": [
            {"name": "topic", "label": "What should it be about?", "type": "textarea", "required": True},
            {"name": "kind", "label": "Kind of text", "type": "select", "choices": GENERATOR_KINDS, "default": "article"},
            {"name": "tone", "label": "Tone", "type": "select", "choices": GENERATOR_TONES, "default": "neutral"},
            {"name": "length", "label": "Length", "type": "select", "choices": list(GENERATOR_LENGTHS), "default": "short"},
        ],
        "conversation_starters": [],
        "temperature": 0.7,
        "max_tokens": 320,
        "is_featured": True,
    },
    {
        "slug": "chatbot",
        "name": "Chatbot",
        "kind": "chatbot",
        "category": "productivity",
        "short_description": "A helpful assistant for questions, ideas and everyday tasks.",
        "description": "Ask anything and keep the conversation going; your chats are saved when you are logged in.",
        "instructions": (
            "You are a helpful, friendly assistant. Answer clearly and concisely. If you do not know, say so."
        ),
        "conversation_starters": [
            "What is the capital of France?",
            "Give me three ideas for a rainy weekend.",
            "Explain photosynthesis in two sentences.",
            "Write a short thank-you note to a colleague.",
        ],
        "temperature": 0.6,
        "max_tokens": 384,
        "is_featured": True,
    },
    {
        "slug": "translator",
        "name": "Translator",
        "kind": "translator",
        "category": "language",
        "short_description": "Translate text between languages.",
        "description": (
            "Pick the source and target language, paste your text, and get the translation alone. "
            "A 135M-parameter model translates simple sentences best; fine-tune it for your domain."
        ),
        "instructions": (
            "You are a translator. Translate the user's text from {source} to {target}. "
            "Reply with the translation only: no explanations, no notes, no quotes."
        ),
        "conversation_starters": [],
        "temperature": 0.2,
        "max_tokens": 384,
        "is_featured": True,
    },
]
