"""The Data section: the tree of text files, the training selection, the preview and the sample corpus."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from pathlib import Path

import pytest
from textual.widgets import Input, Static, TextArea

from core.workspace import Workspace
from tests.tui.helpers import type_into, wait_until
from tui.app import StudioApp
from tui.cli import main
from tui.widgets.data.data_tree import DataTree


async def settled(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def tree_paths(app) -> list[str]:
    return [node.data for node in app.screen.query_one(DataTree).nodes()]


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def test_tree_lists_text_files_but_not_hidden_or_other_files(workspace: Workspace) -> None:
    data = workspace.data_dir
    (data / ".notes.txt").write_text("hidden\n")
    (data / ".cache" / "tokens").mkdir(parents=True)
    (data / ".cache" / "tokens" / "x.txt").write_text("cached\n")
    (data / "image.png").write_bytes(b"\x89PNG\r\n")
    (data / "chat.jsonl").write_text(json.dumps({"text": "hello there"}) + "\n")
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        assert tree_paths(pilot.app) == ["stories", "stories/a.txt", "b.md", "chat.jsonl"]
        assert "all of data/ · 3 files" in text_of(pilot.app, "#data-summary")


async def test_space_toggles_files_and_folders_into_the_selection(workspace: Workspace) -> None:
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        app = pilot.app
        await pilot.press("down", "space")  # stories/a.txt
        assert app.selection == ["stories/a.txt"]
        assert "chosen · 1 file" in text_of(app, "#data-summary")
        await pilot.press("down", "space")  # b.md as well
        assert app.selection == ["b.md", "stories/a.txt"]
        await pilot.press("up", "space")  # a.txt out again
        assert app.selection == ["b.md"]
        await pilot.press("up", "space")  # the whole stories/ folder
        assert app.selection == ["b.md", "stories"]
        await pilot.press("a")  # back to all of data/
        assert app.selection == []
        assert "all of data/" in text_of(app, "#data-summary")


async def test_leaving_a_file_out_of_a_chosen_folder_keeps_the_rest_of_it(workspace: Workspace) -> None:
    (workspace.data_dir / "stories" / "c.txt").write_text("Another story.\n")
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        await pilot.press("space", "down", "space")  # choose stories/, then leave a.txt out
        assert pilot.app.selection == ["stories/c.txt"]


async def test_a_file_that_is_not_utf8_shows_its_problem_in_the_preview(workspace: Workspace) -> None:
    (workspace.data_dir / "latin1.txt").write_bytes("café au lait\n".encode("latin-1") * 20)
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        assert tree_paths(pilot.app)[-1] == "latin1.txt"
        await pilot.press("down", "down", "down")
        await settled(pilot)
        problem = pilot.app.screen.query_one("#data-problem", Static)
        assert problem.display and "not UTF-8" in str(problem.render())
        assert not pilot.app.screen.query_one(TextArea).display  # no garbage shown
        assert "1 skipped" in text_of(pilot.app, "#data-summary")
        await pilot.press("up")  # a good file still previews
        await settled(pilot)
        assert not problem.display
        assert pilot.app.screen.query_one(TextArea).text.startswith(
            (workspace.data_dir / "b.md").read_text().splitlines()[0]
        )


async def test_the_summary_counts_the_duplicates_training_leaves_out(workspace: Workspace) -> None:
    (workspace.data_dir / "zz-copy.md").write_bytes((workspace.data_dir / "b.md").read_bytes())
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        size = (workspace.data_dir / "b.md").stat().st_size
        assert f"1 duplicate ({size / 1024:.1f} KB) left out" in text_of(pilot.app, "#data-summary")


async def test_a_weight_typed_on_an_entry_is_saved_and_shown_with_every_share(workspace: Workspace) -> None:
    from core.data.mixture import read_mix_file

    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        app = pilot.app
        assert "sources (by size" in text_of(app, "#data-sources")
        await pilot.press("w", *"oops", "enter")  # the cursor is on stories/: an invalid weight saves nothing
        assert (
            app.screen.query_one("#data-weight", Input).has_class("-invalid")
            and read_mix_file(workspace.data_dir) == {}
        )
        await pilot.press(*["backspace"] * 4, *"0.25", "enter")
        assert read_mix_file(workspace.data_dir) == {"stories": 0.25}
        assert "sources (by weight" in text_of(app, "#data-sources") and "stories 25%" in text_of(app, "#data-sources")
        assert "b.md 75%" in text_of(app, "#data-sources") and not app.screen.has_class("-weighing")
        await pilot.press("w", *["backspace"] * 4, "enter")  # empty: back to by size
        assert read_mix_file(workspace.data_dir) == {} and "sources (by size" in text_of(app, "#data-sources")
        (workspace.data_dir / "mix.json").write_text("{damaged", encoding="utf-8")
        await pilot.press("g")
        await settled(pilot)
        assert "mix.json is not valid JSON" in text_of(app, "#data-sources")
        await pilot.press("down", "space")
        assert app.selection == ["stories/a.txt"]  # the studio goes on


async def test_a_weight_on_a_file_training_skips_shows_the_error_training_gives(workspace: Workspace) -> None:
    (workspace.data_dir / "broken.txt").write_bytes(b"\x00\xff binary")
    (workspace.data_dir / "mix.json").write_text('{"broken.txt": 0.5}', encoding="utf-8")
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        assert "mix: broken.txt has no usable text" in text_of(pilot.app, "#data-sources")


async def test_the_validation_fraction_must_be_between_0_and_1(workspace: Workspace) -> None:
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await settled(pilot)
        app = pilot.app
        await type_into(pilot, "#data-val", "0.25")
        assert app.val_fraction == 0.25
        await type_into(pilot, "#data-val", "1.5")
        assert app.val_fraction < 1  # the last valid value typed is kept
        assert app.screen.query_one("#data-val-error").display
        assert app.screen.query_one("#data-val", Input).has_class("-invalid")
        await pilot.press("escape", "down", "space")
        assert app.selection == ["stories/a.txt"]  # keys reach the tree again


@pytest.fixture
def quick_sample(monkeypatch):
    """The real sample writer, with the standard library's docstrings (slow to collect) left out."""
    import core.data.sample

    monkeypatch.setattr(core.data.sample, "docstring_documents", lambda: iter([{"title": "t", "text": "Hello. " * 40}]))


async def test_empty_data_offers_the_sample_corpus_on_one_key(tmp_path, quick_sample) -> None:
    workspace = Workspace.resolve(tmp_path / "empty")
    async with StudioApp(workspace).run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        app = pilot.app
        empty = app.screen.query_one("#data-empty", Static)
        assert empty.display and "Press s to add the sample corpus" in str(empty.render())
        await pilot.press("s")
        await wait_until(pilot, lambda: "sample/python-topics.jsonl" in tree_paths(app))
        assert not empty.display
        assert (workspace.data_dir / "sample" / "python-docstrings.jsonl").exists()


async def test_long_names_are_shortened_to_keep_their_size_in_view(workspace: Workspace) -> None:
    name = "the-complete-works-of-william-shakespeare-in-one-volume.txt"
    (workspace.data_dir / name).write_text("to be or not to be\n" * 100)
    async with StudioApp(workspace).run_test(size=(80, 24)) as pilot:
        await settled(pilot)
        tree = pilot.app.screen.query_one(DataTree)
        node = next(n for n in tree.nodes() if n.data == name)
        line = tree.render_label(node, tree.rich_style, tree.rich_style).plain
        assert line.rstrip().endswith("1.9 KB") and "…" in line
        assert len(line) <= tree.scrollable_content_region.width


def hostile_data(data: Path) -> None:
    """A name that is not UTF-8, a pipe, a link to /dev/zero and a UTF-16 file beside the good ones."""
    with open(os.path.join(os.fsencode(data), b"bad\xff.txt"), "wb") as f:
        f.write(b"text under a bad name\n")
    os.mkfifo(data / "pipe.txt")
    (data / "zero.txt").symlink_to("/dev/zero")
    (data / "wide.txt").write_text("Wide text, with é and 漢字.\n" * 40, encoding="utf-16")


def finishes(call, timeout: float = 60.0):
    """call(), failing the test instead of hanging when it does not return within `timeout` seconds."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(value=call()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    return result["value"]


def test_slm_data_and_tokenize_name_what_they_cannot_read(workspace: Workspace, capsys) -> None:
    hostile_data(workspace.data_dir)
    ws = str(workspace.root)
    assert finishes(lambda: main(["--workspace", ws, "data"])) == 0
    out = capsys.readouterr().out
    assert "bad\ufffd.txt" in out and "its name is not valid UTF-8: rename it" in out
    assert re.search(r"pipe\.txt .*! not a regular file \(a pipe, device or broken link\)", out)
    assert re.search(r"zero\.txt .*! not a regular file", out)
    assert re.search(r"wide\.txt +2\.0 KB +40 +1 ", out)  # UTF-16: decoded and usable
    assert "3 usable of 6 files" in out
    assert finishes(lambda: main(["--workspace", ws, "tokenize", "--name", "t", "--vocab-size", "300"])) == 0
    out, err = capsys.readouterr()
    assert "warning: skipped pipe.txt: not a regular file" in err and "warning: skipped bad\ufffd.txt" in err
    assert "saved" in out


async def test_the_data_section_shows_what_it_cannot_read_and_stays_usable(workspace: Workspace) -> None:
    hostile_data(workspace.data_dir)
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await asyncio.wait_for(settled(pilot), 60)
        app = pilot.app
        paths = tree_paths(app)
        assert paths == ["stories", "stories/a.txt", "b.md", "bad\ufffd.txt", "pipe.txt", "wide.txt", "zero.txt"]
        tree = app.screen.query_one(DataTree)
        assert tree.stats["pipe.txt"].error and tree.stats["bad\ufffd.txt"].error and not tree.stats["wide.txt"].error
        summary = text_of(app, "#data-summary")
        assert "all of data/ · 3 files" in summary and "3 skipped" in summary
        await pilot.press("down", "down", "down")  # bad\ufffd.txt
        await settled(pilot)
        problem = app.screen.query_one("#data-problem", Static)
        assert "its name is not valid UTF-8: rename it" in str(problem.render())
        assert "Convert" not in str(problem.render())  # no hint that cannot help
        await pilot.press("down")  # pipe.txt
        await settled(pilot)
        assert "not a regular file" in str(problem.render())
        await pilot.press("down")  # wide.txt previews as text
        await settled(pilot)
        assert not problem.display
        assert app.screen.query_one(TextArea).text.startswith("Wide text, with é and 漢字.\n")
        await pilot.press("space")
        assert app.selection == ["wide.txt"]
        await pilot.press("g")  # a second scan finishes too
        await asyncio.wait_for(settled(pilot), 60)
        assert tree_paths(app) == paths
