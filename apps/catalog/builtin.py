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

# The Translator's few-shot examples: English sentences and their translations, sent as earlier chat turns before
# the text (English or unnamed source). A 135M model told only "translate" tends to answer in English or go on
# chatting; two worked turns show it the target language and the bare-translation format (bench/quality.py
# measures it). None of these sentences is in bench/data/quality/translation.jsonl, the evaluation set.
TRANSLATOR_EXAMPLE_SOURCES = ["I have two sisters.", "The door is open."]
TRANSLATOR_EXAMPLES = {
    "Chinese (Simplified)": ["我有两个姐妹。", "门开着。"],
    "Spanish": ["Tengo dos hermanas.", "La puerta está abierta."],
    "French": ["J'ai deux sœurs.", "La porte est ouverte."],
    "German": ["Ich habe zwei Schwestern.", "Die Tür ist offen."],
    "Italian": ["Ho due sorelle.", "La porta è aperta."],
    "Portuguese": ["Eu tenho duas irmãs.", "A porta está aberta."],
    "Japanese": ["私には姉妹が二人います。", "ドアが開いています。"],
    "Korean": ["저는 자매가 두 명 있어요.", "문이 열려 있어요."],
    "Russian": ["У меня две сестры.", "Дверь открыта."],
    "Arabic": ["لدي أختان.", "الباب مفتوح."],
    "Hindi": ["मेरी दो बहनें हैं।", "दरवाज़ा खुला है।"],
    "Dutch": ["Ik heb twee zussen.", "De deur is open."],
    "Turkish": ["İki kız kardeşim var.", "Kapı açık."],
}

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
        # Sampled at 0.7 with the default penalty of 1.1, the 135M model loops on a sentence in a text of 60 words
        # or more; 1.25 (over the prompt and the text, as every engine applies it) keeps it moving
        # (bench/quality.py, README's performance section). Beam search and no-repeat n-grams are not used: the
        # llama.cpp engine and vLLM refuse them.
        "repetition_penalty": 1.25,
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
            "You are a helpful, friendly assistant. Answer clearly and concisely: when asked a question of fact, "
            "give the answer in your first sentence. If you do not know, say so."
        ),
        "conversation_starters": [
            "What is the capital of France?",
            "Give me three ideas for a rainy weekend.",
            "Explain photosynthesis in two sentences.",
            "Write a short thank-you note to a colleague.",
        ],
        # Lower than 0.6: a small model's facts are in its likeliest tokens (bench/quality.py's questions).
        "temperature": 0.3,
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
