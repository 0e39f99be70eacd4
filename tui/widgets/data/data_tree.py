"""The tree of text files under data/, each marked with whether it is in the training selection."""

from __future__ import annotations

from collections.abc import Iterator

from rich.style import Style
from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from core.data.corpus import FileStats
from tui.format import size
from tui.widgets.data.selection import covers, folder_index, state

MARKS = {"all": "✓ ", "yes": "✓ ", "some": "◦ ", "no": "  "}


class DataTree(Tree[str]):
    """Folders and text files from a scan; a node's data is its path relative to data/ ("" for data/ itself).

    Space is left to the screen (it toggles the selection); enter opens and closes folders.
    """

    COMPONENT_CLASSES = {"data-tree--mark", "data-tree--implicit", "data-tree--detail", "data-tree--problem"}

    def __init__(self, **kwargs) -> None:
        super().__init__("data/", data="", **kwargs)
        self.stats: dict[str, FileStats] = {}
        self.index: dict[str, list[str]] = {"": []}
        self.totals: dict[str, tuple[int, bool]] = {}  # path: (bytes, whether a file there is unusable)
        self.selection: list[str] = []
        self.weights: dict[str, float] = {}  # mixture weights (data/mix.json), shown beside their entries

    def on_mount(self) -> None:
        self.show_root = False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "toggle_node"  # space selects for training (the screen's binding)

    def entries(self, folder: str) -> list[str]:
        return self.index.get(folder, [])

    def is_folder(self, path: str) -> bool:
        return path in self.index

    def show_files(self, files: list[FileStats], selection: list[str]) -> None:
        """Rebuild from a scan, keeping open folders open and the cursor on the same path."""
        cursor = self.cursor_node.data if self.cursor_node is not None else None
        opened = {node.data for node in self.nodes() if node.is_expanded}
        was_empty = not self.root.children
        self.stats = {f.path: f for f in files}
        self.index = folder_index(self.stats)
        if was_empty:
            opened = set(self.entries(""))  # a first look: open the top-level folders
        self.totals = _totals(files)
        self.selection = list(selection)
        self.clear()
        self._add_entries(self.root, "", opened)
        self.call_after_refresh(self._restore_cursor, cursor)

    def _add_entries(self, node: TreeNode[str], folder: str, opened: set[str]) -> None:
        for path in self.entries(folder):
            name = path.rsplit("/", 1)[-1]
            if self.is_folder(path):
                self._add_entries(node.add(Text(f"{name}/"), data=path, expand=path in opened), path, opened)
            else:
                node.add_leaf(Text(name), data=path)

    def _restore_cursor(self, path: str | None) -> None:
        node = next((n for n in self.nodes() if n.data == path and n.line >= 0), None)
        if node is not None:
            self.move_cursor(node)
        elif self.root.children:
            self.move_cursor_to_line(0)

    def nodes(self) -> Iterator[TreeNode[str]]:
        """Every node below the root, depth first."""
        stack = list(reversed(self.root.children))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def show_selection(self, selection: list[str]) -> None:
        self.selection = list(selection)
        self.refresh_labels()

    def show_weights(self, weights: dict[str, float]) -> None:
        self.weights = dict(weights)
        self.refresh_labels()

    def refresh_labels(self) -> None:
        for node in self.nodes():
            node.refresh()

    def files_under(self, path: str) -> list[FileStats]:
        """The scanned files at or below `path`."""
        return [f for p, f in self.stats.items() if covers(path, p)]

    def render_label(self, node: TreeNode[str], base_style: Style, style: Style) -> Text:
        label = super().render_label(node, base_style, style)
        if node.is_root:
            return label
        path = node.data or ""
        mark = state(self.selection, path)
        mark_style = self.get_component_rich_style(
            "data-tree--implicit" if mark == "all" else "data-tree--mark", partial=True
        )
        total, problem = self.totals.get(path, (0, False))
        if problem:
            label.stylize(self.get_component_rich_style("data-tree--problem", partial=True))
        amount = size(total) + (f" w{self.weights[path]:g}" if path in self.weights else "")
        room = self.scrollable_content_region.width - 1 - path.count("/") * self.guide_depth - len(MARKS[mark])
        label.truncate(max(8, room - len(amount) - 2), overflow="ellipsis")  # a long name leaves room for its size
        pad = max(2, room - label.cell_len - len(amount))  # sizes in a column at the right
        detail = Text(" " * pad + amount, self.get_component_rich_style("data-tree--detail", partial=True))
        return Text.assemble((MARKS[mark], mark_style), label, detail)


def _totals(files: list[FileStats]) -> dict[str, tuple[int, bool]]:
    """(bytes, whether any file is unusable) for every file and folder, summed up the folder chain."""
    totals: dict[str, tuple[int, bool]] = {}
    for f in files:
        parts = f.path.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            total, problem = totals.get(path, (0, False))
            totals[path] = (total + f.bytes, problem or f.error is not None)
    return totals
