from __future__ import annotations

from core.chat.session import transcript_markdown


def test_transcript_has_a_section_per_message() -> None:
    text = transcript_markdown(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello\n"}], "Chat", ["model: m"]
    )
    assert text == "# Chat\n\n- model: m\n\n## User\n\nhi\n\n## Assistant\n\nhello\n"
