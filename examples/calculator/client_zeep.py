"""
Call the calculator through the relay with zeep, a plain third-party SOAP client over HTTP.

    python examples/calculator/client_zeep.py
"""

from __future__ import annotations

import argparse
import time

import requests
import zeep
from contract import CONNECTION_STRING

from bindings.credentials import from_connection_string


def main(connection_string: str) -> None:
    """Load the WSDL through the relay and call each operation."""
    address, credentials = from_connection_string(connection_string, "calc")
    session = requests.Session()
    session.headers["ServiceBusAuthorization"] = credentials.token(address.http_url, now=time.time())
    client = zeep.Client(f"{address.http_url}?wsdl", transport=zeep.Transport(session=session))
    print("SOAP 1.1: 2 + 3 =", client.service.Add(2, 3))
    print("SOAP 1.2: 40 + 2 =", client.bind("ICalculatorService", "ICalculator_ws").Add(40, 2))
    try:
        client.service.Divide(1, 0)
    except zeep.exceptions.Fault as fault:
        print("Divide(1, 0) failed:", fault.code, fault.message)
    print("Notify returned", client.service.Notify("hello from zeep"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connection-string", default=CONNECTION_STRING)
    main(parser.parse_args().connection_string)
