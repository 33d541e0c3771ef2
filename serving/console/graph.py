"""The accounts linked to a claim as a small graph, laid out on the server for inline SVG.

The claim's customer sits in the middle; the customers sharing its device, IP hash or
receipt hash sit on a circle around it, one edge per kind of link (parallel edges are
offset so that each shows). The page draws it as SVG with a table beside it as the text
alternative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

WIDTH: Final = 560
HEIGHT: Final = 360
RADIUS: Final = 135  # of the circle of linked customers
MAX_NODES: Final = 16  # more are listed in the table only
EDGE_GAP: Final = 5.0  # between parallel edges, in px
LINK_NAMES: Final = {"device_id": "device", "ip_hash": "IP", "receipt_hash": "receipt"}


@dataclass(frozen=True)
class Node:
    """A customer in the graph."""

    customer_id: str
    x: float
    y: float
    center: bool
    claims: int

    @property
    def label(self) -> str:
        """The customer id, shortened to fit beside the node."""
        return self.customer_id if len(self.customer_id) <= 12 else f"{self.customer_id[:11]}…"


@dataclass(frozen=True)
class Edge:
    """A shared device, IP hash or receipt hash between the center and a linked customer."""

    link: str
    path: str  # SVG path data

    @property
    def name(self) -> str:
        """The kind of link in words."""
        return LINK_NAMES.get(self.link, self.link)


@dataclass(frozen=True)
class LinkGraph:
    """Nodes and edges, in SVG user units (`WIDTH` x `HEIGHT`)."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    hidden: int  # linked customers left out of the drawing (listed in the table)
    width: int = WIDTH
    height: int = HEIGHT


def _edge(x1: float, y1: float, x2: float, y2: float, offset: float) -> str:
    """A straight path between two points, shifted sideways by `offset` px."""
    length = math.hypot(x2 - x1, y2 - y1) or 1.0
    dx, dy = -(y2 - y1) / length * offset, (x2 - x1) / length * offset
    return f"M {x1 + dx:.1f} {y1 + dy:.1f} L {x2 + dx:.1f} {y2 + dy:.1f}"


def link_graph(customer_id: str, claims: int, linked: Sequence[Mapping[str, Any]]) -> LinkGraph:
    """The graph of a case's customer and the accounts linked to it.

    Args:
        customer_id: the claim's customer (the center).
        claims: their claims in the app database.
        linked: `case_detail`'s `linked_accounts` (customer_id, linked_by, claims).
    """
    cx, cy = WIDTH / 2, HEIGHT / 2
    nodes = [Node(customer_id, cx, cy, center=True, claims=claims)]
    edges: list[Edge] = []
    shown = linked[:MAX_NODES]
    for i, account in enumerate(shown):
        angle = 2 * math.pi * i / len(shown) - math.pi / 4  # no edge straight down the label
        x, y = cx + RADIUS * 1.5 * math.cos(angle), cy + RADIUS * math.sin(angle)
        count = len(account["claims"])
        nodes.append(Node(account["customer_id"], x, y, center=False, claims=count))
        links = list(account["linked_by"])
        for j, link in enumerate(links):
            offset = (j - (len(links) - 1) / 2) * EDGE_GAP
            edges.append(Edge(link, _edge(cx, cy, x, y, offset)))
    return LinkGraph(tuple(nodes), tuple(edges), hidden=len(linked) - len(shown))
