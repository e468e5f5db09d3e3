"""Write the README's model table from the registry (`facelens models licences --markdown`), so the two never
disagree; a test fails when the README is out of date.

Run: .venv/bin/python scripts/readme_models.py
"""

from __future__ import annotations

from pathlib import Path

from facelens.models.registry import licence_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- models:start -->", "<!-- models:end -->"


def main() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{licence_markdown()}{END}{tail}")
    print(f"model table written to {README.name}")


if __name__ == "__main__":
    main()
