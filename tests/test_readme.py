"""The README's configuration table is the one generated from the settings."""

from pathlib import Path

from pantau.settings import settings_table

README = Path(__file__).parent.parent / "README.md"


def test_readme_configuration_table_matches_settings() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- settings:start -->") + len("<!-- settings:start -->")
    end = text.index("<!-- settings:end -->")
    assert text[start:end].strip() == settings_table().strip(), (
        "README configuration table is stale: regenerate it with `pantau config`"
    )


def test_readme_gives_exactly_the_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().endswith("make test")


def test_catalogue_document_matches_the_catalogue() -> None:
    from pantau.catalogue import catalogue_markdown

    document = README.parent / "docs" / "catalogue.md"
    assert document.read_text(encoding="utf-8") == catalogue_markdown(), (
        "docs/catalogue.md is stale: regenerate it with `pantau catalogue > docs/catalogue.md`"
    )
