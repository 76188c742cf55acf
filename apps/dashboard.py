"""The live dashboard: a table and a bar chart of average scores, fed by Kafka.

Run it against the local broker (``gradelab broker start``)::

    python apps/dashboard.py --from-beginning
    python apps/dashboard.py --by class,subject --lang fr

Kafka is read in :class:`gradelab.live.LiveFeed`'s worker thread, which only
aggregates. This file builds the widgets, and only the Tk thread touches them:
every ``POLL_MS`` it takes the feed's latest snapshot, and it redraws the
table at most every ``REFRESH_SECONDS`` and the chart at most every
``CHART_REFRESH_SECONDS``, whatever the input rate.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import signal
import sys
import time
import tkinter as tk
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from tkinter import font as tkfont
from tkinter import ttk
from typing import Any

from matplotlib.backends.backend_tkagg import FigureCanvasTkAgg
from matplotlib.figure import Figure

from gradelab.cli import add_connection_arguments
from gradelab.config import Settings
from gradelab.errors import ConfigError, GradelabError
from gradelab.live import (
    DEFAULT_SIMULATOR_RATE,
    GROUPINGS,
    ConnectionState,
    LiveFeed,
    Simulator,
    Snapshot,
    checkpoint_source,
    consumer_source,
    parse_live_grouping,
)
from gradelab.record import SCORE_MAX, SCORE_MIN

logger = logging.getLogger("gradelab.dashboard")

# How often the Tk thread looks for a new snapshot, in milliseconds.
POLL_MS = 100
# Minimum seconds between two redraws of the table, and of the chart, which
# costs the Tk thread more.
REFRESH_SECONDS = 0.25
CHART_REFRESH_SECONDS = 0.5
# Period of the callback that measures the event loop's responsiveness, in ms,
# and how many of its latest measurements are kept (10 minutes' worth).
PROBE_MS = 50
LOOP_DELAY_SAMPLES = 12_000
# The first seconds (window mapping, first chart draw) are left out of the
# reported worst event-loop delay.
WARM_UP_SECONDS = 2.0
# Seconds a thread may hold the GIL while another one waits for it.
SWITCH_INTERVAL = 0.001
# Seconds that closing waits for the feed's worker thread.
STOP_TIMEOUT = 1.5
# Seconds that closing then waits for the simulator to flush its records.
SIMULATOR_STOP_TIMEOUT = 0.3
STAT_COLUMNS = ("count", "mean", "min", "max")
# Above this many bars, the chart shows no values above them and turns its
# group labels upright in a smaller font.
MAX_LABELLED_BARS = 12
# Pixels around a column heading's text: its padding and the column separator.
HEADING_PADDING = 16

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "gradelab: live averages",
        "group_by": "Group by",
        "class": "Class",
        "subject": "Subject",
        "period": "Period",
        "class,subject": "Class and subject",
        "count": "Count",
        "mean": "Mean",
        "min": "Min",
        "max": "Max",
        "start_simulator": "Start simulator",
        "stop_simulator": "Stop simulator",
        "reset": "Reset",
        "chart_y": "Mean score (0 to 20)",
        "overall_mean": "Overall mean",
        "overall_mean_value": "Overall mean: {mean}",
        "waiting": "Waiting for scores...",
        "missing": "(none)",
        "connecting": "Connecting to {servers}...",
        "connected": "Connected to {servers}",
        "unavailable": "No Kafka broker answered at {servers}. Start one with: "
        "gradelab broker start.",
        "retry_in": "Retrying in {seconds} s.",
        "retrying": "Retrying...",
        "disconnected": "Connection to {servers} lost, reconnecting. If the "
        "broker is stopped, start it with: gradelab broker start",
        "failed": "Error: {error}",
        "topic": "topic {topic}",
        "received": "{count} records",
        "invalid": "{count} invalid skipped",
        "rate": "{rate} records/s",
        "last_record": "last record received at {time}",
        "no_record": "no record yet",
        "simulator_sent": "simulator: {count} sent",
        "simulator_error": "simulator stopped: {error}",
    },
    "fr": {
        "title": "gradelab : moyennes en direct",
        "group_by": "Regrouper par",
        "class": "Classe",
        "subject": "Matière",
        "period": "Période",
        "class,subject": "Classe et matière",
        "count": "Effectif",
        "mean": "Moyenne",
        "min": "Min",
        "max": "Max",
        "start_simulator": "Démarrer le simulateur",
        "stop_simulator": "Arrêter le simulateur",
        "reset": "Réinitialiser",
        "chart_y": "Moyenne (0 à 20)",
        "overall_mean": "Moyenne générale",
        "overall_mean_value": "Moyenne générale : {mean}",
        "waiting": "En attente de notes...",
        "missing": "(aucune)",
        "connecting": "Connexion à {servers}...",
        "connected": "Connecté à {servers}",
        "unavailable": "Aucun broker Kafka ne répond à {servers}. Démarrez-en un "
        "avec : gradelab broker start.",
        "retry_in": "Nouvel essai dans {seconds} s.",
        "retrying": "Nouvel essai en cours...",
        "disconnected": "Connexion à {servers} perdue, reconnexion en cours. Si le "
        "broker est arrêté, démarrez-le avec : gradelab broker start",
        "failed": "Erreur : {error}",
        "topic": "topic {topic}",
        "received": "{count} enregistrements",
        "invalid": "{count} invalides ignorés",
        "rate": "{rate} enr./s",
        "last_record": "dernier enregistrement reçu à {time}",
        "no_record": "aucun enregistrement",
        "simulator_sent": "simulateur : {count} envoyés",
        "simulator_error": "simulateur arrêté : {error}",
    },
}


class Texts:
    """The window's labels and number formats in one language."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.labels = LABELS[lang]

    def __getitem__(self, name: str) -> str:
        return self.labels[name]

    def integer(self, value: float) -> str:
        text = f"{round(value):,}"
        # French groups thousands with a narrow no-break space.
        return text.replace(",", "\u202f") if self.lang == "fr" else text

    def decimal(self, value: float, digits: int = 2) -> str:
        if math.isnan(value):
            return ""
        text = f"{value:.{digits}f}"
        return text.replace(".", ",") if self.lang == "fr" else text

    def score(self, value: float) -> str:
        text = f"{value:g}"
        return text.replace(".", ",") if self.lang == "fr" else text

    def grouping(self, fields: tuple[str, ...]) -> str:
        name = ",".join(fields)
        if name in self.labels:
            return self.labels[name]
        return " + ".join(self.labels[field] for field in fields)


class Dashboard:
    """The window: group selector, buttons, table, bar chart and status bar.

    Parameters
    ----------
    root : tkinter.Tk
        The main window.
    feed : LiveFeed
        Started by the caller; stopped by :meth:`close`.
    simulator : Simulator
        Started and stopped by the window's button.
    texts : Texts
        Labels in the chosen language.
    dump_state : Path, optional
        Where :meth:`close` writes the table's contents as JSON.
    resettable : bool
        Whether the Reset button is on; a checkpointed consumer group's
        averages cannot be reset.
    """

    def __init__(
        self,
        root: tk.Tk,
        feed: LiveFeed,
        simulator: Simulator,
        texts: Texts,
        dump_state: Path | None = None,
        resettable: bool = True,
    ) -> None:
        self.root = root
        self.feed = feed
        self.simulator = simulator
        self.texts = texts
        self.dump_state = dump_state
        self.settings = feed.settings
        self.shown: Snapshot | None = None
        self._pending: Snapshot | None = None
        self._last_refresh = -math.inf
        self._last_chart_refresh = -math.inf
        self._closing = False
        # What main() returns once the window is closed.
        self.exit_status = 0
        # Table items by group key, and each item's key and shown values.
        self._items: dict[tuple[str | None, ...], str] = {}
        self._item_keys: dict[str, tuple[str | None, ...]] = {}
        self._item_values: dict[str, tuple[str, ...]] = {}
        self._shown_by: tuple[str, ...] | None = None
        self._columns: tuple[str, ...] = ()
        self._sort_column: str | None = None
        self._sort_descending = False
        self._chart_labels: list[str] | None = None
        self._started = time.monotonic()
        self._probe_due = self._started
        # Seconds: the lateness of the periodic probe after warm-up, over the
        # last LOOP_DELAY_SAMPLES runs.
        self.loop_delays: deque[float] = deque(maxlen=LOOP_DELAY_SAMPLES)

        root.title(texts["title"])
        root.geometry("1100x620")
        root.minsize(800, 480)
        tkfont.nametofont("TkDefaultFont").configure(size=11)
        ttk.Style(root).configure("Treeview", rowheight=24)
        self._build_toolbar(resettable)
        self._build_status_bar()
        self._build_body()
        self._show_columns(feed.by)
        self.status_text.set(texts["connecting"].format(servers=self._servers))
        root.protocol("WM_DELETE_WINDOW", self.close)
        self._schedule_poll()
        self._probe()

    @property
    def _servers(self) -> str:
        return self.settings.bootstrap_servers

    # Building the widgets.

    def _build_toolbar(self, resettable: bool) -> None:
        bar = ttk.Frame(self.root, padding=(8, 6))
        bar.pack(side=tk.TOP, fill=tk.X)
        ttk.Label(bar, text=self.texts["group_by"]).pack(side=tk.LEFT)
        self._groupings = list(GROUPINGS.values())
        if self.feed.by not in self._groupings:
            self._groupings.append(self.feed.by)
        self.grouping = ttk.Combobox(
            bar,
            state="readonly",
            width=22,
            values=[self.texts.grouping(fields) for fields in self._groupings],
        )
        self.grouping.current(self._groupings.index(self.feed.by))
        self.grouping.bind("<<ComboboxSelected>>", self._on_grouping_selected)
        self.grouping.pack(side=tk.LEFT, padx=(6, 18))
        self.simulator_button = ttk.Button(
            bar, text=self.texts["start_simulator"], command=self._toggle_simulator
        )
        self.simulator_button.pack(side=tk.LEFT)
        self.reset_button = ttk.Button(
            bar, text=self.texts["reset"], command=self.feed.reset
        )
        self.reset_button.pack(side=tk.LEFT, padx=6)
        if not resettable:
            self.reset_button.state(["disabled"])

    def _build_status_bar(self) -> None:
        self.status_text = tk.StringVar(self.root)
        self.status = ttk.Label(
            self.root,
            textvariable=self.status_text,
            anchor=tk.W,
            relief=tk.SUNKEN,
            padding=(8, 3),
        )
        self.status.pack(side=tk.BOTTOM, fill=tk.X)
        # Wrap long messages at the window's width instead of cutting them.
        self.status.bind(
            "<Configure>",
            lambda event: self.status.configure(wraplength=max(event.width - 16, 100)),
        )

    def _build_body(self) -> None:
        body = ttk.Panedwindow(self.root, orient=tk.HORIZONTAL)
        body.pack(side=tk.TOP, fill=tk.BOTH, expand=True, padx=8, pady=(0, 6))

        table_frame = ttk.Frame(body)
        self.table = ttk.Treeview(table_frame, show="headings", selectmode="browse")
        scrollbar = ttk.Scrollbar(
            table_frame, orient=tk.VERTICAL, command=self.table.yview
        )
        self.table.configure(yscrollcommand=scrollbar.set)
        scrollbar.pack(side=tk.RIGHT, fill=tk.Y)
        self.table.pack(side=tk.LEFT, fill=tk.BOTH, expand=True)
        body.add(table_frame, weight=1)

        chart_frame = ttk.Frame(body)
        self.figure = Figure(figsize=(6, 4.5), dpi=100)
        self.figure.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.2)
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasTkAgg(self.figure, master=chart_frame)
        self.canvas.get_tk_widget().pack(fill=tk.BOTH, expand=True)
        self.canvas.mpl_connect("draw_event", self._on_chart_drawn)
        self._animated: list[Any] = []
        self._background: Any = None
        body.add(chart_frame, weight=1)
        self._draw_empty_chart()

    def _show_columns(self, by: tuple[str, ...]) -> None:
        """Set the table's columns for grouping ``by`` and empty it."""
        self.table.delete(*self.table.get_children())
        self._items.clear()
        self._item_keys.clear()
        self._item_values.clear()
        self._shown_by = by
        self._columns = (*by, *STAT_COLUMNS)
        self.table.configure(columns=self._columns)
        for column in self._columns:
            numeric = column in STAT_COLUMNS
            width = max(64 if numeric else 80, self._heading_width(column))
            self.table.column(
                column,
                width=width,
                minwidth=width if numeric else 60,
                anchor=tk.E if numeric else tk.W,
                stretch=not numeric,
            )
        if self._sort_column not in self._columns:
            self._sort_column = None
            self._sort_descending = False
        self._update_headings()

    def _heading_width(self, column: str) -> int:
        """Return the pixels that the column's longest heading needs.

        Every language is measured, with the sort arrow, so that a column
        keeps its width whatever the language and the sort order.
        """
        name = ttk.Style(self.root).lookup("Treeview.Heading", "font")
        heading_font = tkfont.nametofont(name or "TkHeadingFont")
        return HEADING_PADDING + max(
            heading_font.measure(labels[column] + " \u25bc")
            for labels in LABELS.values()
        )

    def _update_headings(self) -> None:
        for column in self._columns:
            text = self.texts[column]
            if column == self._sort_column:
                text += " \u25bc" if self._sort_descending else " \u25b2"
            self.table.heading(
                column, text=text, command=lambda c=column: self._sort_by(c)
            )

    # Events from the user.

    def _on_grouping_selected(self, _event: tk.Event) -> None:
        self.feed.set_grouping(self._groupings[self.grouping.current()])

    def _toggle_simulator(self) -> None:
        if self.simulator.running:
            self.simulator.stop(timeout=0)
        else:
            self.simulator.start()
        self._update_simulator_button()

    def _sort_by(self, column: str) -> None:
        if column == self._sort_column:
            self._sort_descending = not self._sort_descending
        else:
            self._sort_column = column
            self._sort_descending = column in STAT_COLUMNS
        self._update_headings()
        if self.shown is not None:
            self._order_rows(self.shown)

    # Polling the feed and redrawing.

    def _schedule_poll(self) -> None:
        self.root.after(POLL_MS, self._poll)

    def _probe(self) -> None:
        """Measure how late this periodic callback runs: the worst time the
        event loop was busy (redrawing, or waiting for the GIL)."""
        now = time.monotonic()
        if now - self._started >= WARM_UP_SECONDS:
            self.loop_delays.append(now - self._probe_due)
        self._probe_due = now + PROBE_MS / 1000
        self.root.after(PROBE_MS, self._probe)

    def _poll(self) -> None:
        now = time.monotonic()
        if self._closing:
            return
        snapshot = self.feed.latest()
        if snapshot is not None:
            self._pending = snapshot
        if self._pending is not None and now - self._last_refresh >= REFRESH_SECONDS:
            self.show(self._pending)
            self._pending = None
            self._last_refresh = now
        self._schedule_poll()

    def show(self, snapshot: Snapshot) -> None:
        """Redraw the table, the chart and the status bar from ``snapshot``."""
        if snapshot.by != self._shown_by:
            self._show_columns(snapshot.by)
        self._update_rows(snapshot)
        self._order_rows(snapshot)
        now = time.monotonic()
        if now - self._last_chart_refresh >= CHART_REFRESH_SECONDS:
            self._draw_chart(snapshot)
            self._last_chart_refresh = now
        self.status_text.set(self._status_line(snapshot))
        self._update_simulator_button()
        self.shown = snapshot

    def _row_values(self, snapshot: Snapshot, index: int) -> tuple[str, ...]:
        row = snapshot.rows[index]
        texts = self.texts
        groups = [texts["missing"] if part is None else part for part in row.key]
        stats = [
            texts.integer(row.count),
            texts.decimal(row.mean),
            texts.score(row.min),
            texts.score(row.max),
        ]
        return (*groups, *stats)

    def _update_rows(self, snapshot: Snapshot) -> None:
        """Update changed rows in place, add new groups, drop vanished ones."""
        present = set()
        for index, row in enumerate(snapshot.rows):
            values = self._row_values(snapshot, index)
            item = self._items.get(row.key)
            if item is None:
                item = self.table.insert("", tk.END, values=values)
                self._items[row.key] = item
                self._item_keys[item] = row.key
            elif self._item_values[item] != values:
                self.table.item(item, values=values)
            self._item_values[item] = values
            present.add(row.key)
        for key in [key for key in self._items if key not in present]:
            item = self._items.pop(key)
            del self._item_keys[item]
            del self._item_values[item]
            self.table.delete(item)

    def _order_rows(self, snapshot: Snapshot) -> None:
        rows = list(snapshot.rows)
        column = self._sort_column
        if column in STAT_COLUMNS:
            rows.sort(key=lambda row: getattr(row, column))
        elif column is not None:
            position = snapshot.by.index(column)
            rows.sort(key=lambda row: (row.key[position] is None, row.key[position]))
        if self._sort_descending:
            rows.reverse()
        ordered = [self._items[row.key] for row in rows]
        if list(self.table.get_children()) != ordered:
            for index, item in enumerate(ordered):
                self.table.move(item, "", index)

    def _group_label(self, key: tuple[str | None, ...]) -> str:
        return " \u00b7 ".join(
            self.texts["missing"] if part is None else part for part in key
        )

    def _draw_empty_chart(self) -> None:
        axes = self.axes
        axes.clear()
        axes.set_ylim(SCORE_MIN, SCORE_MAX)
        axes.set_yticks(range(SCORE_MIN, SCORE_MAX + 1, 5))
        axes.set_ylabel(self.texts["chart_y"])
        axes.set_xticks([])
        axes.text(
            0.5,
            0.5,
            self.texts["waiting"],
            transform=axes.transAxes,
            ha="center",
            va="center",
            color="gray",
        )
        self._chart_labels = []
        self._animated = []
        self._redraw_chart()

    def _draw_chart(self, snapshot: Snapshot) -> None:
        """Update the bars; lay the axes out again only when the groups change.

        The bars, their values and the mean line are animated artists. A
        refresh pastes the saved background and draws only them (blitting),
        which took about 10 ms of the Tk thread's time where a full redraw
        took 30 to 75 ms, measured with 12 bars on an idle 2-core AMD EPYC.
        The legend is static because redrawing it cost as much as the rest.
        """
        labels = [self._group_label(row.key) for row in snapshot.rows]
        means = [row.mean for row in snapshot.rows]
        if not labels:
            if self._chart_labels:
                self._draw_empty_chart()
            return
        if labels != self._chart_labels:
            self._lay_out_chart(labels)
        for bar, mean in zip(self._bars, means, strict=True):
            bar.set_height(mean)
        for text, mean in zip(self._bar_texts, means, strict=False):
            text.set_y(min(mean + 0.3, SCORE_MAX - 0.8))
            text.set_text(self.texts.decimal(mean, 1))
        self._mean_line.set_ydata([snapshot.mean, snapshot.mean])
        self._mean_text.set_text(
            self.texts["overall_mean_value"].format(
                mean=self.texts.decimal(snapshot.mean)
            )
        )
        if self._background is None:
            return  # the full redraw already scheduled draws the new values
        self.canvas.restore_region(self._background)
        self._draw_animated()
        self.canvas.blit(self.figure.bbox)

    def _lay_out_chart(self, labels: list[str]) -> None:
        axes = self.axes
        axes.clear()
        axes.set_ylim(SCORE_MIN, SCORE_MAX)
        axes.set_yticks(range(SCORE_MIN, SCORE_MAX + 1, 5))
        axes.set_ylabel(self.texts["chart_y"])
        axes.grid(axis="y", alpha=0.3)
        positions = range(len(labels))
        if len(labels) <= 6:
            axes.set_xticks(positions, labels)
        elif len(labels) <= MAX_LABELLED_BARS:
            axes.set_xticks(positions, labels, rotation=30, ha="right")
        else:
            axes.set_xticks(positions, labels, rotation=90, fontsize=7)
        self._bars = axes.bar(
            positions, [0] * len(labels), color="tab:blue", width=0.7, animated=True
        )
        # Values above the bars only while they fit; the table has them all.
        self._bar_texts = [
            axes.text(index, 0, "", ha="center", fontsize=9, animated=True)
            for index in positions
            if len(labels) <= MAX_LABELLED_BARS
        ]
        self._mean_line = axes.axhline(
            0,
            color="tab:red",
            linestyle="--",
            label=self.texts["overall_mean"],
            animated=True,
        )
        # The overall mean's value, above the axes' top left corner, where
        # it overlaps neither the bars' values nor the legend.
        self._mean_text = axes.text(
            0,
            1.01,
            "",
            transform=axes.transAxes,
            ha="left",
            va="bottom",
            color="tab:red",
            animated=True,
        )
        axes.legend(loc="upper right")
        self._animated = [
            *self._bars,
            *self._bar_texts,
            self._mean_line,
            self._mean_text,
        ]
        self._chart_labels = labels
        self._redraw_chart()

    def _redraw_chart(self) -> None:
        """Schedule a full redraw, which also saves a new background."""
        self._background = None
        self.canvas.draw_idle()

    def _on_chart_drawn(self, _event: object) -> None:
        # A full draw (new layout, resized window) skips animated artists:
        # save what it drew as the background, then draw them on top.
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_animated()

    def _draw_animated(self) -> None:
        for artist in self._animated:
            self.figure.draw_artist(artist)

    def _status_line(self, snapshot: Snapshot) -> str:
        texts = self.texts
        state = snapshot.state
        if state is ConnectionState.UNAVAILABLE:
            connection = texts["unavailable"].format(servers=self._servers)
            if snapshot.retry_in is None:
                retry = texts["retrying"]
            else:
                retry = texts["retry_in"].format(seconds=math.ceil(snapshot.retry_in))
            connection = f"{connection} {retry}"
        elif state is ConnectionState.FAILED:
            connection = texts["failed"].format(error=snapshot.error)
        elif state is ConnectionState.DISCONNECTED:
            connection = texts["disconnected"].format(servers=self._servers)
        else:
            connection = texts[state.value].format(servers=self._servers)
        if snapshot.last_record_time is None:
            last = texts["no_record"]
        else:
            moment = datetime.fromtimestamp(snapshot.last_record_time)
            last = texts["last_record"].format(time=moment.strftime("%H:%M:%S"))
        counters = [
            texts["topic"].format(topic=self.settings.topic),
            texts["received"].format(count=texts.integer(snapshot.received)),
            texts["invalid"].format(count=texts.integer(snapshot.invalid)),
            texts["rate"].format(rate=texts.integer(snapshot.records_per_second)),
            last,
        ]
        status = self.simulator.status()
        if status.error is not None:
            counters.append(texts["simulator_error"].format(error=status.error))
        elif status.running or status.sent:
            counters.append(
                texts["simulator_sent"].format(count=texts.integer(status.sent))
            )
        # The connection message can be long, so the counters get a line of
        # their own.
        return connection + "\n" + "  \u2022  ".join(counters)

    def _update_simulator_button(self) -> None:
        name = "stop_simulator" if self.simulator.running else "start_simulator"
        self.simulator_button.configure(text=self.texts[name])

    # Closing.

    def close(self) -> None:
        """Stop the simulator and the feed, write the state file, then exit."""
        if self._closing:
            return
        self._closing = True
        logger.info("Closing the dashboard.")
        # Until the end of the try block, an error means a failed exit. It
        # still propagates, and the window is destroyed in any case, because
        # an exception in a Tk callback would otherwise keep it open.
        self.exit_status = 1
        try:
            self.simulator.stop(timeout=0)
            self.feed.stop(timeout=STOP_TIMEOUT)
            self.simulator.stop(timeout=SIMULATOR_STOP_TIMEOUT)
            # The worker publishes a last snapshot as it stops; a worker still
            # connecting does not, and the newest one taken is shown instead.
            final = self.feed.latest() or self._pending
            if final is not None:
                self.show(final)
            if self.dump_state is None or self._write_state_or_report(self.dump_state):
                self.exit_status = 0
        finally:
            self.root.destroy()
        logger.info("Dashboard closed.")

    def _loop_delay_figures(self) -> dict[str, float | None]:
        """Return the probe's worst and 99th-percentile lateness, in ms."""
        delays = sorted(self.loop_delays)
        if not delays:
            return {"loop_delay_max_ms": None, "loop_delay_p99_ms": None}
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        return {
            "loop_delay_max_ms": round(delays[-1] * 1000, 1),
            "loop_delay_p99_ms": round(p99 * 1000, 1),
        }

    def _write_state_or_report(self, path: Path) -> bool:
        """Write the state file to ``path``, or print why not and return False."""
        try:
            self.write_state(path)
        except OSError as exc:
            # The path was checked at start-up, but its folder can still be
            # removed or the disk fill up.
            print(
                f"error: cannot write the state file {path}: {exc.strerror or exc}.",
                file=sys.stderr,
            )
            return False
        return True

    def write_state(self, path: Path) -> None:
        """Write the table's rows, in their shown order, and the counters."""
        state: dict[str, Any] = {
            "bootstrap_servers": self._servers,
            "topic": self.settings.topic,
            "lang": self.texts.lang,
            "columns": [self.table.heading(c)["text"] for c in self._columns],
            "column_widths": [self.table.column(c, "width") for c in self._columns],
            "status": self.status_text.get(),
            "simulator_sent": self.simulator.status().sent,
            **self._loop_delay_figures(),
        }
        if self.shown is None:
            state.update(by=list(self.feed.by), rows=[], received=0, invalid=0)
        else:
            snapshot = self.shown.to_dict()
            order = {row.key: i for i, row in enumerate(self.shown.rows)}
            shown_keys = [self._item_keys[item] for item in self.table.get_children()]
            snapshot["rows"] = [snapshot["rows"][order[key]] for key in shown_keys]
            state.update(snapshot)
        path.write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")


def check_dump_state(path: Path) -> str | None:
    """Return why the state file cannot be written at ``path``, or None.

    Checked before the window opens, so a mistyped path fails at once rather
    than after the window has run.
    """
    if path.is_dir():
        example = path / "state.json"
        return f"{path} is a directory: give a file name, such as {example}"
    parent = path.parent
    if not parent.is_dir():
        return f"the folder {parent} does not exist: create it first"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable: choose another path"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable: choose another path"
    return None


def build_parser() -> argparse.ArgumentParser:
    """Build the dashboard's command-line parser."""
    parser = argparse.ArgumentParser(
        prog="dashboard.py",
        description="Show live averages of the scores in a Kafka topic.",
    )
    add_connection_arguments(parser, verb="read")
    parser.add_argument(
        "--group",
        help="consumer group id. The averages are saved with the offsets they "
        "cover in the topic <group>.<topic>.state, so a dashboard restarted with "
        "the same group, even after a crash, counts every record exactly once; "
        "Reset is then off (default: no group, nothing saved)",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start from the earliest record when there is no committed offset",
    )
    parser.add_argument(
        "--by",
        default="subject",
        help="grouping: subject, class, period, or a combination such as "
        "class,subject (default subject)",
    )
    parser.add_argument(
        "--lang", choices=sorted(LABELS), default="en", help="label language"
    )
    parser.add_argument(
        "--simulator-rate",
        type=float,
        default=DEFAULT_SIMULATOR_RATE,
        metavar="RECORDS_PER_SECOND",
        help="rate of the Start simulator button; 0 sends as fast as possible "
        f"(default {DEFAULT_SIMULATOR_RATE:g})",
    )
    parser.add_argument(
        "--exit-after",
        type=float,
        metavar="SECONDS",
        help="close the window cleanly after this many seconds",
    )
    parser.add_argument(
        "--dump-state",
        type=Path,
        metavar="FILE",
        help="on exit, write the table's rows and the status counters as JSON",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress at INFO level"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dashboard until its window is closed; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kafka-python logs every failed connection; the status bar shows it once.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # Each Tk call releases the GIL, and a busy worker thread then keeps it
    # for up to the switch interval (5 ms by default) before the Tk thread
    # gets it back. With a few dozen Tk calls per redraw, 1 ms keeps the
    # event loop responsive at full input rate.
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        by = parse_live_grouping(args.by)
    except ConfigError as exc:
        parser.error(str(exc))
    if not args.simulator_rate >= 0:
        parser.error(
            f"Invalid --simulator-rate {args.simulator_rate:g}: expected 0 or more"
        )
    if args.exit_after is not None and not args.exit_after > 0:
        parser.error(f"Invalid --exit-after {args.exit_after:g}: expected seconds > 0")
    if args.dump_state is not None:
        problem = check_dump_state(args.dump_state)
        if problem is not None:
            parser.error(f"Invalid --dump-state {args.dump_state}: {problem}.")
    try:
        settings = Settings.load(
            bootstrap_servers=args.bootstrap_servers, topic=args.topic
        )
    except GradelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        root = tk.Tk()
    except tk.TclError as exc:
        print(
            f"error: cannot open the dashboard window ({exc}). Run it in a "
            "desktop session, or under xvfb-run on a server.",
            file=sys.stderr,
        )
        return 1

    if args.group:
        source_factory = checkpoint_source(args.group, args.from_beginning)
    else:
        source_factory = consumer_source(from_beginning=args.from_beginning)
    # Each connection attempt lasts at most 3 s, or GRADELAB_CONNECT_TIMEOUT
    # if shorter, so that the status bar soon says when no broker answers;
    # see DEFAULT_CONNECT_TIMEOUT in gradelab.live.
    feed = LiveFeed(settings, by=by, source_factory=source_factory)
    simulator = Simulator(settings, rate=args.simulator_rate or None)
    dashboard = Dashboard(
        root,
        feed,
        simulator,
        Texts(args.lang),
        args.dump_state,
        resettable=not args.group,
    )

    def close_soon(_signum: int, _frame: Any) -> None:
        # Signal handlers run in the main thread, which is the Tk thread.
        root.after_idle(dashboard.close)

    signal.signal(signal.SIGTERM, close_soon)
    signal.signal(signal.SIGINT, close_soon)
    # A full garbage collection scans every object, and the GIL is held
    # meanwhile: with matplotlib, pandas and Tk loaded, that froze the event
    # loop for 70 to 160 ms. Freezing the objects made at start-up leaves
    # them out of every later collection, which then took under 5 ms.
    gc.collect()
    gc.freeze()
    feed.start()
    if args.exit_after is not None:
        root.after(round(args.exit_after * 1000), dashboard.close)
    root.mainloop()
    return dashboard.exit_status


if __name__ == "__main__":
    status = main()
    # By now the feed's consumer is closed, unless it was still connecting,
    # and the state file is written. Exiting without the interpreter's
    # teardown of numpy, pandas and matplotlib, which takes up to a second on
    # a busy 2-core machine, keeps closing within two seconds. A simulator
    # still flushing after its grace time loses its last demo records.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
