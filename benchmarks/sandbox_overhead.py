"""Print what the bounded sandbox costs: render_string untrusted vs trusted.

Run: .venv/bin/python benchmarks/sandbox_overhead.py
"""

from __future__ import annotations

import time

from mailer import render_string

SUBJECT = "Deals for {{ name }}"
BODY = """\
Hello {{ name|title }},
{% for product in products %}
{{ loop.index }}. {{ product.name|title }} - {{ "%.2f"|format(product.price) }} EUR
{%- if product.sale %} (sale){% endif %}
{% endfor %}
{{ tags|join(", ") }}
"""
HTML = (
    "<p>Hello {{ name }}</p>"
    "<ul>{% for p in products %}<li>{{ p.name }}</li>{% endfor %}</ul>"
)
CONTEXT = {
    "name": "ann <co>",
    "products": [
        {"name": f"item {n}", "price": n * 1.5, "sale": n % 3 == 0} for n in range(20)
    ],
    "tags": ["new", "sale", "spring"],
}
ROUNDS = 2000


def per_render(trusted: bool) -> float:
    render_string(
        SUBJECT, BODY, HTML, trusted=trusted, to="a@example.test", context=CONTEXT
    )
    started = time.perf_counter()
    for _ in range(ROUNDS):
        render_string(
            SUBJECT, BODY, HTML, trusted=trusted, to="a@example.test", context=CONTEXT
        )
    return (time.perf_counter() - started) / ROUNDS


def main() -> None:
    trusted = min(per_render(True) for _ in range(3))
    untrusted = min(per_render(False) for _ in range(3))
    print(f"render_string, 20-product newsletter, best of 3 x {ROUNDS} renders")
    print(f"  trusted:   {trusted * 1e6:8.1f} us per message")
    print(f"  untrusted: {untrusted * 1e6:8.1f} us per message")
    print(f"  ratio untrusted/trusted: {untrusted / trusted:.2f}")


if __name__ == "__main__":
    main()
