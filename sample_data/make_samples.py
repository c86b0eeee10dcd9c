"""Write the sample datasets used by the ready-made jobs in ``jobs/``.

Re-run from the repository root; the output is the same byte for byte on the same pyarrow::

    python sample_data/make_samples.py        # with the project's venv active

It writes, next to this script:

* ``reviews.jsonl``: 200 short product reviews, one JSON object a line,
  ``{"id": "rev-0001", "product": ..., "prompt": ...}``; positive, negative, neutral and
  mixed, a few one-liners and a few long ones;
* ``documents.parquet``: 50 documents with columns ``id``, ``title``, ``category``, ``body``
  (a few paragraphs, 150-900 words) and ``word_count``, in row groups of 20 so that readers
  meet batch boundaries.

Everything is generated from phrase pools with a seeded ``random.Random``: no network, no
model, only the standard library and pyarrow.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20240611
REVIEW_COUNT = 200
DOCUMENT_COUNT = 50

# --- reviews -----------------------------------------------------------------------------------

# Product name -> what a reviewer calls it.
PRODUCTS = {
    "Aurora wireless earbuds": "pair of earbuds",
    "TrailMate 2L hydration pack": "hydration pack",
    "Kettlewise electric kettle": "kettle",
    "Lumen desk lamp": "lamp",
    "Northwind rain jacket": "jacket",
    "QuietStep running shoes": "pair of shoes",
    "PixelPal kids' tablet": "tablet",
    "BrewBuddy pour-over set": "pour-over set",
    "Orbit robot vacuum": "vacuum",
    "Cedar & Sage scented candle": "candle",
    "FlexiGrip yoga mat": "yoga mat",
    "VoltCharge 20,000 mAh power bank": "power bank",
    "Harbor cast-iron skillet": "skillet",
    "Nimbus memory-foam pillow": "pillow",
    "Sprout indoor herb garden": "herb garden",
}

OPENINGS = {
    "positive": [
        "Really happy with this {noun}.",
        "Bought this {time} and it has exceeded my expectations.",
        "Honestly the best {noun} I've owned.",
        "Five stars from me.",
        "I was skeptical at first, but this {noun} won me over.",
        "Got this as a gift for my {person} and they love it.",
    ],
    "negative": [
        "Very disappointed with this {noun}.",
        "Bought this {time} and I already regret it.",
        "Do not waste your money.",
        "I wanted to like this {noun}, I really did.",
        "Returned it after {days} days.",
        "One star, and only because zero isn't an option.",
    ],
    "neutral": [
        "It's a {noun}. It does what it says.",
        "Bought this {time} to replace an older one.",
        "Fairly average {noun}, nothing special.",
        "Mixed feelings about this one.",
        "It's okay for the price.",
    ],
}

DETAILS = {
    "positive": [
        "The build quality feels solid and nothing rattles.",
        "Setup took less than {minutes} minutes.",
        "Battery life is easily {hours} hours, better than advertised.",
        "It looks great on the shelf and gets compliments.",
        "Customer service answered my question within a day.",
        "It arrived {days} days early and was well packaged.",
        "My {person} uses it every day without complaints.",
        "Cleaning it is quick and painless.",
    ],
    "negative": [
        "It stopped working after {days} days.",
        "The instructions were useless and setup took over an hour.",
        "Battery barely lasts {hours} hours.",
        "The material feels cheap and one seam was already coming loose.",
        "Customer service never replied to my two emails.",
        "It arrived with a cracked corner and a missing part.",
        "It is much louder than the listing suggested.",
        "The color is nothing like the photos.",
    ],
    "neutral": [
        "Setup was straightforward.",
        "It is a bit smaller than I expected.",
        "Battery life is about {hours} hours, roughly as advertised.",
        "Shipping took {days} days.",
        "The design is plain but inoffensive.",
        "It works, though I haven't used it much yet.",
        "Comparable to the cheaper brand I had before.",
    ],
}

CLOSINGS = {
    "positive": [
        "Would buy again.",
        "Highly recommend.",
        "Worth every penny.",
        "Already ordered a second one for my {person}.",
        "",
    ],
    "negative": [
        "Would not recommend.",
        "Returning it.",
        "Avoid.",
        "Save yourself the trouble and buy something else.",
        "",
    ],
    "neutral": [
        "Fine for now.",
        "Might update this review later.",
        "Not bad, not great.",
        "Does the job.",
        "",
    ],
}

LONG_TAILS = [
    "I have been using it for {weeks} weeks now, mostly in the mornings before work, and my "
    "opinion has settled. The first week I noticed every little thing; by the third I mostly "
    "stopped thinking about it, which I suppose is what you want from a {noun}.",
    "For context, I compared it against two other options in the same price range before "
    "ordering, read far too many reviews, and watched a couple of videos. None of that prepared "
    "me for how it actually feels to use day to day.",
    "A note for anyone with a small apartment: measure first. The listing's dimensions are "
    "accurate, but the photos make it look more compact than it is.",
]

SHORT_REVIEWS = {
    "positive": ["Love it!", "Perfect.", "Great value, works as described."],
    "negative": ["Broke on day one.", "Junk.", "Never arrived, refund pending."],
    "neutral": ["It's fine.", "As described.", "OK."],
}

FILLERS = {
    "time": ["last month", "two weeks ago", "in the spring sale", "after a long search"],
    "person": ["partner", "teenager", "dad", "roommate", "sister", "mother-in-law"],
    "days": ["3", "5", "10", "12", "30"],
    "hours": ["4", "6", "9", "14", "20"],
    "minutes": ["2", "5", "10"],
    "weeks": ["three", "six", "ten"],
}


def _fill(rng: random.Random, template: str, noun: str) -> str:
    """Fill a phrase's {slots} from the filler pools."""
    values = {key: rng.choice(options) for key, options in FILLERS.items()}
    return template.format(noun=noun, **values)


# Details about batteries, power and setup only make sense for some products.
BATTERY_PRODUCTS = {
    "Aurora wireless earbuds",
    "PixelPal kids' tablet",
    "Orbit robot vacuum",
    "VoltCharge 20,000 mAh power bank",
}
POWERED_PRODUCTS = BATTERY_PRODUCTS | {
    "Kettlewise electric kettle",
    "Lumen desk lamp",
    "Sprout indoor herb garden",
}
POWERED_WORDS = ("setup", "stopped working", "louder")


def _fits(detail: str, product: str) -> bool:
    if "{hours}" in detail:
        return product in BATTERY_PRODUCTS
    if any(word in detail.lower() for word in POWERED_WORDS):
        return product in POWERED_PRODUCTS
    return True


def _details(rng: random.Random, mood: str, product: str, k: int) -> list[str]:
    """``k`` different detail phrases that fit the product."""
    pool = [detail for detail in DETAILS[mood] if _fits(detail, product)]
    return rng.sample(pool, k=min(k, len(pool)))


def _review(rng: random.Random) -> tuple[str, str]:
    """One (product, review text) pair; the mood and length vary."""
    product = rng.choice(sorted(PRODUCTS))
    noun = PRODUCTS[product] if rng.random() < 0.7 else "product"
    mood = rng.choices(["positive", "negative", "neutral", "mixed"], weights=[5, 3, 2, 2])[0]
    shape = rng.random()
    if shape < 0.07:
        return product, rng.choice(SHORT_REVIEWS[mood if mood != "mixed" else "neutral"])
    if mood == "mixed":
        parts = [
            _fill(rng, rng.choice(OPENINGS["neutral"]), noun),
            _fill(rng, _details(rng, "positive", product, 1)[0], noun),
            "On the other hand, "
            + _lower_first(_fill(rng, _details(rng, "negative", product, 1)[0], noun)),
            _fill(rng, rng.choice(CLOSINGS["neutral"]), noun),
        ]
    else:
        details = _details(rng, mood, product, k=rng.randint(1, 3))
        parts = [
            _fill(rng, rng.choice(OPENINGS[mood]), noun),
            *(_fill(rng, d, noun) for d in details),
            _fill(rng, rng.choice(CLOSINGS[mood]), noun),
        ]
    if shape > 0.93:
        parts.insert(2, _fill(rng, rng.choice(LONG_TAILS), noun))
    return product, " ".join(part for part in parts if part)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def write_reviews(path: Path, rng: random.Random) -> int:
    """Write reviews.jsonl; returns the number of rows."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for number in range(1, REVIEW_COUNT + 1):
            product, text = _review(rng)
            row = {"id": f"rev-{number:04d}", "product": product, "prompt": text}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return REVIEW_COUNT


# --- documents ---------------------------------------------------------------------------------

CATEGORIES = {
    "engineering report": {
        "titles": [
            "Latency regression in the {system} after the {month} release",
            "Capacity plan for the {system}, next two quarters",
            "Post-incident review: {system} outage on {month} {day}",
            "Migrating the {system} to a new storage backend",
        ],
        "sentences": [
            "The {team} team measured a {pct}% increase in p99 latency on the {system}.",
            "Most of the regression traced back to a change in connection pooling.",
            "We reproduced the issue in staging with {n} concurrent clients.",
            "Rolling back the configuration restored throughput within {n} minutes.",
            "Disk usage on the primary cluster grows by about {pct}% per month.",
            "At the current rate the cluster reaches its limit in roughly {n} weeks.",
            "The on-call engineer paged the {team} team at {hour}:00 UTC.",
            "Error rates peaked at {pct}% of requests before the mitigation took effect.",
            "A missing index on the events table caused full scans under load.",
            "We recommend adding an alert on queue depth, not only on error rate.",
            "The new backend cut median write latency from {n} ms to {m} ms in benchmarks.",
            "Dual writes will run for {n} days before reads are switched over.",
            "No customer data was lost, but {n} requests were retried by clients.",
            "The change had passed review because the test fixture used a tiny dataset.",
            "Follow-up work is tracked in the {team} team's backlog.",
        ],
    },
    "policy memo": {
        "titles": [
            "Updated remote work policy for {month}",
            "Travel and expenses: changes effective {month} {day}",
            "Data retention rules for the {system}",
            "Guidance on using external AI tools at work",
        ],
        "sentences": [
            "This memo replaces the guidance issued last year.",
            "Employees may work remotely up to three days per week with manager approval.",
            "Expenses above {money} now require a second approver.",
            "Economy class remains the default for flights shorter than {n} hours.",
            "Personal data in the {system} must be deleted after {n} months.",
            "Teams should review their access lists at least once per quarter.",
            "Exceptions must be requested in writing and are reviewed by the {team} office.",
            "Confidential documents must not be pasted into external tools.",
            "Managers are responsible for making sure their teams have read this memo.",
            "The policy applies to contractors as well as permanent staff.",
            "Questions should be sent to the {team} office before {month} {day}.",
            "Violations may lead to the loss of remote work eligibility.",
            "The previous reimbursement limit of {money} per night no longer applies.",
            "We will revisit these rules after a {n}-month trial period.",
        ],
    },
    "research summary": {
        "titles": [
            "Customer interviews on the {system}: key findings",
            "Survey results: how teams plan their {month} releases",
            "Pricing experiment summary, {month}",
            "Literature review: onboarding and retention",
        ],
        "sentences": [
            "We interviewed {n} customers across small and mid-sized companies.",
            "About {pct}% of respondents said setup took longer than expected.",
            "The most requested feature was better export to spreadsheets.",
            "Participants in the test group converted {pct}% more often than the control group.",
            "The effect was strongest among users who signed up on mobile.",
            "Several participants described the dashboard as cluttered.",
            "Retention after {n} days improved when onboarding included a sample project.",
            "The sample size was small, so these results should be treated as directional.",
            "Teams that release weekly reported fewer rollbacks than teams that release monthly.",
            "Price sensitivity was lower than we assumed for annual plans.",
            "Two interviewees had built their own workaround using the public API.",
            "Support tickets mentioning billing dropped by {pct}% during the experiment.",
            "We recommend a follow-up study with at least {m} participants.",
            "Qualitative feedback was coded independently by two researchers.",
        ],
    },
    "meeting notes": {
        "titles": [
            "Weekly sync: {team} team, {month} {day}",
            "Quarterly planning notes, {month}",
            "Launch readiness review for the {system}",
            "Retrospective: {month} sprint",
        ],
        "sentences": [
            "Attendees: the {team} leads, product, and two guests from support.",
            "The launch date stays on {month} {day} unless the security review slips.",
            "Action item: the {team} team to draft the rollout plan by Friday.",
            "We agreed to cut the reporting feature from the first release.",
            "Support asked for {n} days' notice before any pricing change.",
            "The demo went well, but the import flow still confuses new users.",
            "Hiring is behind plan by {n} engineers.",
            "Budget for the quarter is {money}, roughly flat versus last quarter.",
            "Nobody owns the flaky end-to-end tests; this needs an owner this week.",
            "The sprint closed {n} of {m} planned tickets.",
            "What went well: pairing on the migration and faster code review.",
            "What to improve: fewer meetings on Wednesdays.",
            "Open question: do we keep supporting the legacy API after {month}?",
            "Next meeting moves to Thursday because of the holiday.",
        ],
    },
    "customer support digest": {
        "titles": [
            "Support digest, week of {month} {day}",
            "Top issues with the {system} this month",
            "Escalations review, {month}",
        ],
        "sentences": [
            "Ticket volume rose {pct}% week over week, mostly after the mobile update.",
            "The most common issue was users being logged out unexpectedly.",
            "Median first response time was {n} minutes.",
            "{n} tickets were escalated to the {team} team.",
            "Several enterprise customers asked about single sign-on.",
            "A workaround for the export bug has been added to the help center.",
            "Customer satisfaction held steady at {pct}%.",
            "Refund requests were concentrated on the annual plan.",
            "One customer reported a billing error of {money}, since corrected.",
            "Agents asked for a saved reply covering the new password rules.",
            "Chat volume peaks between {hour}:00 and {hour2}:00 UTC.",
            "The backlog of unresolved tickets is down to {m}.",
        ],
    },
}

DOC_FILLERS = {
    "system": [
        "billing service",
        "search cluster",
        "mobile app",
        "data pipeline",
        "customer portal",
        "notification service",
    ],
    "team": ["platform", "payments", "growth", "infrastructure", "people", "finance", "security"],
    "month": ["January", "March", "April", "June", "September", "November"],
    "day": [str(d) for d in (2, 7, 12, 15, 21, 28)],
    "pct": ["3", "7", "12", "18", "24", "41"],
    "n": ["2", "3", "4", "6", "8", "12", "15", "30"],
    "m": ["40", "55", "80", "120", "250"],
    "hour": ["02", "09", "14", "17"],
    "hour2": ["11", "16", "20"],
    "money": ["$150", "$400", "$1,200", "$2,500", "$48,000"],
}


def _doc_fill(rng: random.Random, template: str) -> str:
    values = {key: rng.choice(options) for key, options in DOC_FILLERS.items()}
    return template.format(**values)


# Sentences that fit any category, so long documents repeat themselves less.
GENERAL_SENTENCES = [
    "Background for new readers is in the linked document from {month}.",
    "Owners for each open item are listed at the end of this document.",
    "Several people raised the same concern independently, which is why it is covered here.",
    "The numbers below are preliminary and may change by up to {pct}%.",
    "Compared with the same period last year, the trend is broadly similar.",
    "The {team} team reviewed a draft of this document and their comments are included.",
    "Not everyone agreed with this conclusion, and the disagreement is noted below.",
    "A short update will follow once the remaining data arrives in {month}.",
    "The main risk is that the timeline depends on one person's availability.",
    "None of this requires action from most readers.",
    "If anything here is unclear, reply to this document rather than starting a new thread.",
    "We will measure the outcome again in {n} weeks.",
]


def _body(rng: random.Random, sentences: list[str], target_words: int) -> str:
    """Paragraphs of 3-7 sentences until the body reaches about ``target_words`` words.

    Sentences are dealt from a shuffled deck, so none repeats until all have been used.
    """
    deck: list[str] = []
    paragraphs: list[str] = []
    words = 0
    while words < target_words:
        chosen = []
        for _ in range(rng.randint(3, 7)):
            if not deck:
                deck = [*sentences, *GENERAL_SENTENCES]
                rng.shuffle(deck)
            chosen.append(_doc_fill(rng, deck.pop()))
        paragraph = " ".join(chosen)
        paragraphs.append(paragraph)
        words += len(paragraph.split())
    return "\n\n".join(paragraphs)


def write_documents(path: Path, rng: random.Random) -> int:
    """Write documents.parquet; returns the number of rows."""
    rows: dict[str, list[object]] = {k: [] for k in ("id", "title", "category", "body")}
    names = sorted(CATEGORIES)
    for number in range(1, DOCUMENT_COUNT + 1):
        category = names[(number - 1) % len(names)] if number <= len(names) else rng.choice(names)
        pools = CATEGORIES[category]
        target = rng.choice([rng.randint(150, 300), rng.randint(300, 600), rng.randint(600, 780)])
        rows["id"].append(f"doc-{number:03d}")
        rows["title"].append(_doc_fill(rng, rng.choice(pools["titles"])))
        rows["category"].append(category)
        rows["body"].append(_body(rng, pools["sentences"], target))
    word_counts = [len(str(body).split()) for body in rows["body"]]
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("title", pa.string()),
            ("category", pa.string()),
            ("body", pa.string()),
            ("word_count", pa.int64()),
        ]
    )
    table = pa.table({**rows, "word_count": word_counts}, schema=schema)
    pq.write_table(table, path, row_group_size=20)
    return table.num_rows


def main() -> None:
    rng = random.Random(SEED)
    reviews = write_reviews(HERE / "reviews.jsonl", rng)
    documents = write_documents(HERE / "documents.parquet", rng)
    print(f"wrote {reviews} reviews to {HERE / 'reviews.jsonl'}")
    print(f"wrote {documents} documents to {HERE / 'documents.parquet'}")


if __name__ == "__main__":
    main()
