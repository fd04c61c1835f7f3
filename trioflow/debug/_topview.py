"""The ``top`` screen, on textual (the ``console`` extra).

Why textual rather than rich alone: ``top`` needs keys (sort, filter, open a
group, open a task's stack), a filter box and screens to go back from, which
textual gives (with a pilot to test it) and rich would leave to hand-written
terminal input. Its cost is start-up (about 0.6 s to import against 0.2 s
for rich.live) and a redraw of tens of ms for a hundred rows — in the
console's own process, never in the service it watches
(``docs/benchmarks/timeline.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, ClassVar, cast

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from ._top import TopState, ms, num

__all__ = ["TopApp"]


def _table(node: DOMNode, selector: str) -> DataTable[Any]:
    return cast("DataTable[Any]", node.query_one(selector, DataTable))


_GROUP_COLUMNS = (
    "GROUP",
    "TASKS",
    "BUSY%",
    "POLLS/s",
    "PARKED",
    "PARKED TIME",
    "LONGEST STEP",
    "WAITING ON",
)
_RESOURCE_COLUMNS = ("RESOURCE", "LIMIT", "IN USE", "WAITING", "WAIT p99", "WAITS")


class StackScreen(Screen[None]):
    """One task's stack, as a task dump prints it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "app.pop_screen", "back")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self._title = title
        self._text = text

    def compose(self) -> ComposeResult:
        yield Static(Text(self._title, style="bold"), id="stack-title")
        with VerticalScroll():
            yield Static(Text(self._text), id="stack")
        yield Footer()


class GroupScreen(Screen[None]):
    """The tasks of one group, busiest first; enter opens a task's stack."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "back"),
        Binding("enter", "open", "stack"),
    ]

    def __init__(self, state: TopState, name: str) -> None:
        super().__init__()
        self.state = state
        self.group = name

    def compose(self) -> ComposeResult:
        yield Static(Text(f"group {self.group}", style="bold"), id="group-title")
        yield DataTable[Any](id="tasks", cursor_type="row")
        yield Footer()

    async def on_mount(self) -> None:
        table = _table(self, "#tasks")
        table.add_columns("TASK", "NAME", "POLLS", "BUSY", "LONGEST STEP", "WAITING ON", "FOR")
        doc = await asyncio.to_thread(self.state.group_tasks, self.group)
        for tid, name, polls, busy, longest, label, parked_for in doc["tasks"]:
            table.add_row(
                str(tid),
                name,
                str(polls),
                ms(busy),
                ms(longest),
                label,
                ms(parked_for),
                key=str(tid),
            )
        table.focus()

    async def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        await self.action_open()

    async def action_open(self) -> None:
        table = _table(self, "#tasks")
        if table.row_count == 0:
            return
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert key is not None
        text = await asyncio.to_thread(self.state.task_stack, int(key))
        app = cast("App[None]", self.app)  # pyright: ignore[reportUnknownMemberType]
        app.push_screen(StackScreen(f"task {key}", text))


class TopApp(App[None]):
    """Groups, resources and lints, refreshed every ``interval`` seconds."""

    TITLE = "trioflow top"
    CSS = """
    #summary { height: 1; }
    #groups { height: 1fr; }
    #resources { height: auto; max-height: 40%; }
    #lints { height: auto; max-height: 25%; }
    #filter { display: none; }
    #filter.shown { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("s", "sort", "sort"),
        Binding("slash", "filter", "filter"),
        Binding("enter", "open", "open group"),
        Binding("p", "pause", "pause"),
        Binding("r", "refresh_now", "refresh"),
    ]

    def __init__(self, state: TopState, *, interval: float = 1.0) -> None:
        super().__init__()
        self.state = state
        self.interval = interval
        self.paused = False

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        yield DataTable[Any](id="groups", cursor_type="row")
        yield DataTable[Any](id="resources", cursor_type="none")
        yield Static(id="lints")
        yield Input(placeholder="filter groups (enter to apply, empty to clear)", id="filter")
        yield Footer()

    async def on_mount(self) -> None:
        _table(self, "#groups").add_columns(*_GROUP_COLUMNS)
        _table(self, "#resources").add_columns(*_RESOURCE_COLUMNS)
        await self.refresh_data()
        self.set_interval(self.interval, self.refresh_data)
        _table(self, "#groups").focus()

    async def refresh_data(self) -> None:
        if self.paused:
            return
        await asyncio.to_thread(self.state.poll)
        self.redraw()

    def redraw(self) -> None:
        st = self.state
        summary = (
            f"{st.base}  {st.tasks:,} tasks  {len(st.groups)} groups  "
            f"frame {st.frames} ({st.last_bytes:,} B)  sort: {st.sort}"
            + (
                f"  sampled: {st.coverage:.1%} of the time seen, busy and polls estimated"
                if st.coverage < 1
                else ""
            )
            + (f"  filter: {st.filter!r}" if st.filter else "")
            + ("  [paused]" if self.paused else "")
        )
        self.query_one("#summary", Static).update(
            Text(st.error, style="bold red") if st.error else Text(summary, style="bold")
        )
        groups = _table(self, "#groups")
        selected = None
        if groups.row_count:
            selected = groups.coordinate_to_cell_key(groups.cursor_coordinate).row_key.value
        groups.clear()
        for g in st.sorted_groups():
            waiting = f"{g.waiting_on} ×{g.waiting_count}" if g.waiting_on else ""
            groups.add_row(
                g.name,
                str(g.tasks),
                f"{g.busy_pct:.1f}",
                f"{g.polls_per_s:.0f}",
                str(g.parked),
                ms(g.parked_time),
                f"{ms(g.max_step)} (task {g.max_task})" if g.max_task else ms(g.max_step),
                waiting,
                key=g.name,
            )
        if selected is not None and selected in st.groups:
            with contextlib.suppress(Exception):  # filtered out meanwhile
                groups.move_cursor(row=groups.get_row_index(selected))
        res = _table(self, "#resources")
        res.clear()
        for r in sorted(st.resources.values(), key=lambda r: (r.kind, r.label)):
            res.add_row(
                r.label, num(r.limit), num(r.in_use), str(r.waiting), ms(r.wait_p99), str(r.waits)
            )
        lints = Text()
        for lint in st.lints:
            lints.append(f"⚠ {lint['kind']}: ", style="bold yellow")
            lints.append(f"{lint['text']}\n")
        if not st.lints:
            lints.append("no lints", style="green")
        if st.stuck_age is None:
            lints.append("\n(stuck tasks: no analysis yet)", style="dim")
        else:
            lints.append(f"\n(stuck tasks: analysed {st.stuck_age:.0f}s ago)", style="dim")
        self.query_one("#lints", Static).update(lints)

    # -- keys --------------------------------------------------------------------

    def action_sort(self) -> None:
        self.state.next_sort()
        self.redraw()

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.redraw()

    async def action_refresh_now(self) -> None:
        paused, self.paused = self.paused, False
        await self.refresh_data()
        self.paused = paused

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.state.filter
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.state.filter = event.value.strip()
        event.input.remove_class("shown")
        _table(self, "#groups").focus()
        self.redraw()

    def action_open(self) -> None:
        groups = _table(self, "#groups")
        if groups.row_count == 0:
            return
        key = groups.coordinate_to_cell_key(groups.cursor_coordinate).row_key.value
        if key is not None:
            self.push_screen(GroupScreen(self.state, key))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "groups":  # pyright: ignore[reportUnknownMemberType]
            self.action_open()
