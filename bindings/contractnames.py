"""
Name checks of a service contract, run once by C{@contract} when the interface is declared.

Requests are dispatched by action and request element, and the WSDL names every element and type; two
things sharing a name would be ambiguous, so such a contract fails on import. Kept apart from
L{bindings.contracts}, which holds the contract values and their wire codecs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zope.interface import Interface
from zope.interface.interface import InterfaceClass

from bindings.xsdtypes import TypeSpec, structs_in

if TYPE_CHECKING:
    from bindings.contracts import Operation


def declared_names(interface: InterfaceClass) -> list[tuple[str, Any]]:
    """Attribute names in declaration order, base interfaces first."""
    names: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for iface in reversed(interface.__iro__):
        if iface is Interface:
            continue
        for name in iface.names():
            if name not in seen:
                seen.add(name)
                names.append((name, iface[name]))
    return names


def check_unique_names(contract_name: str, operations: Sequence[Operation]) -> None:
    """
    Refuse a contract in which two things share a name.

    @param contract_name: the contract's name, for the messages.
    @param operations: the contract's operations, in declaration order.
    @raise TypeError: when two operations share a wire name or an action, an element name is used twice,
        two different types have one name, or a fault has the name of an operation element.
    """
    wire_names = [op.name for op in operations]
    duplicates = sorted({n for n in wire_names if wire_names.count(n) > 1})
    if duplicates:
        raise TypeError(f"{contract_name}: operation names must be unique: {', '.join(duplicates)}")
    actions = [op.action for op in operations]
    if len(set(actions)) != len(actions):
        raise TypeError(f"{contract_name}: two operations share an action")
    seen: dict[str, type] = {}
    elements: set[str] = set()
    for op in operations:
        for tag in (op.name, f"{op.name}Response"):
            if tag in elements:
                raise TypeError(f"{contract_name}: element name {tag!r} is used twice")
            elements.add(tag)
    for op in operations:
        specs: list[TypeSpec] = [p.spec for p in op.parameters] + [f.struct for f in op.faults]
        if op.returns is not None:
            specs.append(op.returns)
        for spec in specs:
            for struct in structs_in(spec):
                if seen.setdefault(struct.name, struct.python) is not struct.python:
                    raise TypeError(f"{contract_name}: two different types are named {struct.name!r}")
        for fault in op.faults:
            if fault.name in elements:
                raise TypeError(f"{contract_name}: fault {fault.name!r} has the name of an operation element")
