"""
Service contracts: C{zope.interface} interfaces whose methods are SOAP operations (spec section 8).

C{@operation} stores its options in the function's C{__dict__}, which zope.interface copies into the
C{Method}'s tagged values; C{@contract} then checks the whole interface at declaration time (so a bad
contract fails on import, not on the first call) and stores a L{Contract} value on it. The value knows the
WCF-compatible names (actions, wrapper elements, C{Result}) and turns typed arguments, results and
declared faults into document/literal wrapped elements and back.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeVar

from lxml import etree
from zope.interface.interface import InterfaceClass, Method

from bindings.contractnames import check_unique_names, declared_names
from bindings.faultcodes import FaultCode
from bindings.xsdtypes import (
    FieldSpec,
    Struct,
    TypeSpec,
    ValueCodecError,
    construct,
    decode_sequence,
    encode_value,
    spec_for,
    structs_in,
)

OPERATION_TAG: Final = "relay.bindings.operation"
CONTRACT_TAG: Final = "relay.bindings.contract"
DEFAULT_NAMESPACE: Final = "http://tempuri.org/"

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


class ContractError(ValueError):
    """A message body does not match the contract (wrong element, missing or malformed value)."""


class DeclaredFault(Exception):
    """
    Base class of faults an operation declares; subclasses are dataclasses whose fields form the detail.

    The detail element and the WSDL fault are named after the class; C{code} is the SOAP Code the fault is
    sent with (C{Sender} unless a subclass says otherwise).
    """

    code: ClassVar[FaultCode] = FaultCode.SENDER

    def reason(self) -> str:
        """The fault's reason text: the exception message, else the first docstring line, else the name."""
        if self.args and isinstance(self.args[0], str):
            return self.args[0]
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else type(self).__name__


@dataclass(frozen=True, slots=True)
class OperationOptions:
    """What C{@operation} recorded; read back by C{@contract}."""

    one_way: bool
    faults: tuple[type[DeclaredFault], ...]
    action: str | None
    name: str | None
    function: Callable[..., Any] = field(compare=False, repr=False)


def operation(
    *,
    one_way: bool = False,
    faults: Iterable[type[DeclaredFault]] = (),
    action: str | None = None,
    name: str | None = None,
) -> Callable[[_F], _F]:
    """
    Mark an interface method as a SOAP operation.

    @param one_way: the caller gets no reply (the method must return C{None}).
    @param faults: L{DeclaredFault} subclasses the operation may raise.
    @param action: the request action; default C{{namespace}/{Contract}/{Operation}}.
    @param name: the operation's wire name; default the method name.
    """

    def decorate(function: _F) -> _F:
        function.__dict__[OPERATION_TAG] = OperationOptions(one_way, tuple(faults), action, name, function)
        return function

    return decorate


@dataclass(frozen=True, slots=True)
class Parameter:
    """One operation parameter, a child element of the request wrapper."""

    name: str
    spec: TypeSpec


@dataclass(frozen=True, slots=True)
class FaultContract:
    """
    A declared fault of one operation.

    @ivar python: the exception class.
    @ivar struct: its detail type.
    @ivar action: C{{operation action}{FaultName}Fault} (spec 7.2).
    """

    python: type[DeclaredFault]
    struct: Struct
    action: str

    @property
    def name(self) -> str:
        """The fault's name: its class name."""
        return self.struct.name


@dataclass(frozen=True, slots=True)
class Operation:
    """
    One operation with its wire names and typed (de)serialisation.

    @ivar name: the wire name (C{Add}); C{method} is the Python attribute name.
    @ivar returns: the result type, or C{None} for a method returning C{None}.
    """

    name: str
    method: str
    namespace: str
    one_way: bool
    action: str
    reply_action: str
    parameters: tuple[Parameter, ...]
    returns: TypeSpec | None
    faults: tuple[FaultContract, ...]
    signature: inspect.Signature = field(compare=False, repr=False)

    @property
    def request_element(self) -> str:
        """The request wrapper's Clark name: C{{ns}Operation}."""
        return f"{{{self.namespace}}}{self.name}"

    @property
    def response_element(self) -> str:
        """The reply wrapper's Clark name: C{{ns}OperationResponse}."""
        return f"{{{self.namespace}}}{self.name}Response"

    @property
    def result_name(self) -> str:
        """The result element's local name: C{OperationResult}."""
        return f"{self.name}Result"

    def _fields(self) -> tuple[FieldSpec, ...]:
        return tuple(FieldSpec(p.name, p.spec) for p in self.parameters)

    def encode_request(self, *args: Any, **kwargs: Any) -> etree._Element:
        """
        Build the request wrapper from call arguments, bound as Python would bind them.

        @raise ContractError: when the arguments do not bind or do not have the declared types.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ContractError(f"{self.name}: {e}") from None
        bound.apply_defaults()
        wrapper = etree.Element(self.request_element, nsmap={None: self.namespace})
        try:
            for parameter in self.parameters:
                tag = f"{{{self.namespace}}}{parameter.name}"
                encode_value(wrapper, tag, parameter.spec, bound.arguments[parameter.name], self.namespace)
        except ValueCodecError as e:
            raise ContractError(f"{self.name}: {e}") from None
        return wrapper

    def decode_request(self, element: etree._Element) -> dict[str, Any]:
        """
        Read a request wrapper into keyword arguments, in declaration order.

        @raise ContractError: when the element is not this operation's request or a value is malformed.
        """
        if element.tag != self.request_element:
            raise ContractError(f"expected {self.request_element}, got {element.tag}")
        try:
            return decode_sequence(list(element), self._fields(), self.namespace)
        except ValueCodecError as e:
            raise ContractError(f"{self.name}: {e}") from None

    def encode_response(self, value: Any) -> etree._Element:
        """
        Build the reply wrapper holding C{{Operation}Result} (nothing when the method returns C{None}).

        @raise ContractError: when the value does not have the declared type.
        """
        if self.one_way:
            raise ContractError(f"{self.name} is one-way and has no response")
        wrapper = etree.Element(self.response_element, nsmap={None: self.namespace})
        if self.returns is not None:
            try:
                encode_value(
                    wrapper, f"{{{self.namespace}}}{self.result_name}", self.returns, value, self.namespace
                )
            except ValueCodecError as e:
                raise ContractError(f"{self.name} result: {e}") from None
        return wrapper

    def decode_response(self, element: etree._Element) -> Any:
        """
        Read a reply wrapper into the typed result.

        @raise ContractError: when the element is not this operation's response or the value is malformed.
        """
        if element.tag != self.response_element:
            raise ContractError(f"expected {self.response_element}, got {element.tag}")
        if self.returns is None:
            fields: tuple[FieldSpec, ...] = ()
        else:
            fields = (FieldSpec(self.result_name, self.returns),)
        try:
            values = decode_sequence(list(element), fields, self.namespace)
        except ValueCodecError as e:
            raise ContractError(f"{self.name} result: {e}") from None
        return values.get(self.result_name)

    def fault_for(self, error: BaseException) -> FaultContract | None:
        """The declared fault an exception stands for, or C{None} for an undeclared exception."""
        for fault in self.faults:
            if type(error) is fault.python:
                return fault
        return None

    def encode_fault(self, error: DeclaredFault) -> etree._Element:
        """
        Build the detail element of a declared fault.

        @raise ContractError: when the exception is not declared on this operation.
        """
        fault = self.fault_for(error)
        if fault is None:
            raise ContractError(f"{type(error).__name__} is not declared on {self.name}")
        holder = etree.Element("holder", nsmap={None: self.namespace})
        try:
            encode_value(holder, f"{{{self.namespace}}}{fault.name}", fault.struct, error, self.namespace)
        except ValueCodecError as e:
            raise ContractError(f"{fault.name}: {e}") from None
        return holder[0]

    def decode_fault(self, detail: etree._Element) -> DeclaredFault | None:
        """
        Rebuild a declared fault from a detail element, or C{None} when it is not one of this operation's.

        @raise ContractError: when the element names a declared fault but its content is malformed.
        """
        for fault in self.faults:
            if detail.tag == f"{{{self.namespace}}}{fault.name}":
                try:
                    values = decode_sequence(list(detail), fault.struct.fields, self.namespace)
                    declared: DeclaredFault = construct(fault.python, values, fault.name)
                except ValueCodecError as e:
                    raise ContractError(f"{fault.name}: {e}") from None
                return declared
        return None


@dataclass(frozen=True, slots=True)
class Contract:
    """
    A checked contract.

    @ivar interface: the zope interface.
    @ivar name: the contract name (WSDL portType), the interface name unless given.
    @ivar namespace: the contract namespace; all elements are qualified in it.
    @ivar operations: in declaration order (base interfaces first).
    """

    interface: InterfaceClass = field(repr=False)
    name: str
    namespace: str
    operations: tuple[Operation, ...]

    @property
    def multicast_compatible(self) -> bool:
        """Whether every operation is one-way, as a C{multicast} name requires."""
        return all(op.one_way for op in self.operations)

    def operation(self, name: str) -> Operation:
        """
        The operation with this wire name.

        @raise KeyError: when there is none.
        """
        for op in self.operations:
            if op.name == name:
                return op
        raise KeyError(name)

    def by_method(self, method: str) -> Operation:
        """
        The operation behind a Python method name.

        @raise KeyError: when there is none.
        """
        for op in self.operations:
            if op.method == method:
                return op
        raise KeyError(method)

    def by_action(self, action: str) -> Operation | None:
        """The operation whose request action is C{action}, or C{None}."""
        return next((op for op in self.operations if op.action == action), None)

    def by_request_element(self, tag: str) -> Operation | None:
        """The operation whose request wrapper is named C{tag} (Clark notation), or C{None}."""
        return next((op for op in self.operations if op.request_element == tag), None)

    def structs(self) -> tuple[Struct, ...]:
        """Every complex type the contract uses, each once, dependencies first."""
        seen: dict[str, Struct] = {}
        for op in self.operations:
            specs: list[TypeSpec] = [p.spec for p in op.parameters]
            if op.returns is not None:
                specs.append(op.returns)
            specs.extend(f.struct for f in op.faults)
            for spec in specs:
                for struct in structs_in(spec):
                    seen.setdefault(struct.name, struct)
        return tuple(seen.values())


def _join(namespace: str, *parts: str) -> str:
    return namespace + ("" if namespace.endswith("/") else "/") + "/".join(parts)


_FAULT_ATTRIBUTES: Final = frozenset(name for name in dir(DeclaredFault) if not name.startswith("_"))
"""C{code}, C{reason}, C{args}, ...: a field of that name would shadow what the host builds the fault from."""


def _fault_contract(contract_name: str, op_name: str, action: str, error: Any) -> FaultContract:
    if not (isinstance(error, type) and issubclass(error, DeclaredFault)):
        raise TypeError(f"{contract_name}.{op_name}: faults must be DeclaredFault subclasses, not {error!r}")
    if not dataclasses.is_dataclass(error):
        raise TypeError(f"{contract_name}.{op_name}: fault {error.__name__} must be a dataclass")
    shadowing = sorted(f.name for f in dataclasses.fields(error) if f.name in _FAULT_ATTRIBUTES)
    if shadowing:
        raise TypeError(
            f"{contract_name}.{op_name}: fault {error.__name__} has fields named {', '.join(shadowing)}, "
            "which DeclaredFault uses itself (rename them)"
        )
    spec = spec_for(error)
    if not isinstance(spec, Struct):  # pragma: no cover - a dataclass always maps to a Struct
        raise TypeError(f"{contract_name}.{op_name}: fault {error.__name__} is not a complex type")
    return FaultContract(error, spec, f"{action}{error.__name__}Fault")


def _build_operation(
    contract_name: str, namespace: str, method_name: str, options: OperationOptions
) -> Operation:
    where = f"{contract_name}.{method_name}"
    function = options.function
    try:
        hints = typing.get_type_hints(function)
    except NameError as e:
        raise TypeError(
            f"{where}: cannot resolve annotations ({e}); define the types at module level"
        ) from None
    signature = inspect.signature(function)
    parameters: list[Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"{where}: *args and **kwargs are not allowed")
        if parameter.name not in hints:
            raise TypeError(f"{where}: parameter {parameter.name!r} needs a type annotation")
        try:
            parameters.append(Parameter(parameter.name, spec_for(hints[parameter.name])))
        except TypeError as e:
            raise TypeError(f"{where}: parameter {parameter.name!r}: {e}") from None
    if "return" not in hints:
        raise TypeError(f"{where}: the return type must be annotated (use -> None for no result)")
    returns: TypeSpec | None = None
    if hints["return"] is not type(None):
        try:
            returns = spec_for(hints["return"])
        except TypeError as e:
            raise TypeError(f"{where}: return type: {e}") from None
    if options.one_way and returns is not None:
        raise TypeError(f"{where}: a one-way operation must return None")
    if options.one_way and options.faults:
        raise TypeError(f"{where}: a one-way operation cannot declare faults (they cannot reach the sender)")
    name = options.name or method_name
    action = options.action or _join(namespace, contract_name, name)
    faults = tuple(_fault_contract(contract_name, name, action, f) for f in options.faults)
    if len({f.name for f in faults}) != len(faults):
        raise TypeError(f"{where}: a fault is declared twice")
    return Operation(
        name=name,
        method=method_name,
        namespace=namespace,
        one_way=options.one_way,
        action=action,
        reply_action=action + "Response",
        parameters=tuple(parameters),
        returns=returns,
        faults=faults,
        signature=signature,
    )


def contract(*, namespace: str = DEFAULT_NAMESPACE, name: str | None = None) -> Callable[[_T], _T]:
    """
    Declare a zope interface as a service contract and check it (spec section 8).

    @param namespace: the contract namespace (WCF's default is C{http://tempuri.org/}).
    @param name: the contract name; default the interface name.
    @raise TypeError: when the interface breaks a rule: undecorated or non-method attributes, one-way
        methods with results, duplicate operation names, unsupported types, C{*args}/C{**kwargs}.
    """

    def decorate(interface: _T) -> _T:
        if not isinstance(interface, InterfaceClass):
            raise TypeError("@contract applies to zope.interface interfaces")
        contract_name = name or interface.__name__
        operations: list[Operation] = []
        for attribute, description in declared_names(interface):
            if not isinstance(description, Method):
                raise TypeError(f"{contract_name}.{attribute}: contracts hold only operations")
            options = description.queryTaggedValue(OPERATION_TAG)
            if not isinstance(options, OperationOptions):
                raise TypeError(f"{contract_name}.{attribute}: every method of a contract needs @operation")
            operations.append(_build_operation(contract_name, namespace, attribute, options))
        check_unique_names(contract_name, operations)
        interface.setTaggedValue(
            CONTRACT_TAG, Contract(interface, contract_name, namespace, tuple(operations))
        )
        return interface  # type: ignore[return-value]

    return decorate


def contract_of(interface: Any) -> Contract:
    """
    The checked contract of an interface declared with L{contract}.

    @raise TypeError: when the interface is not a contract.
    """
    value = interface.queryTaggedValue(CONTRACT_TAG) if isinstance(interface, InterfaceClass) else None
    if not isinstance(value, Contract) or value.interface is not interface:
        raise TypeError(f"{interface!r} is not declared with @contract")
    return value


def check_multicast(value: Contract) -> None:
    """
    Insist that a contract can serve a C{multicast} name: every operation one-way.

    @raise TypeError: naming the operations that are not one-way.
    """
    if not value.multicast_compatible:
        names = ", ".join(op.name for op in value.operations if not op.one_way)
        raise TypeError(f"{value.name}: a multicast contract must be all one-way; not one-way: {names}")


def call_arguments(operation_: Operation, values: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Split decoded values into positional and keyword arguments for calling the implementation."""
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for parameter in operation_.signature.parameters.values():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            keywords[parameter.name] = values[parameter.name]
        else:
            positional.append(values[parameter.name])
    return positional, keywords
