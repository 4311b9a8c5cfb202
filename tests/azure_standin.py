"""A local stand-in for the Azure ML management endpoint the real ``MLClient`` calls.

Run as a process: ``python -m tests.azure_standin PORT CERT KEY TOKEN WORKSPACES_JSON``.
It serves, over TLS on 127.0.0.1, ``GET /subscriptions/<sub>/resourceGroups/<rg>/
providers/Microsoft.MachineLearningServices/workspaces/<ws>`` with the workspace JSON
(``properties.mlFlowTrackingUri`` from WORKSPACES_JSON, a ``{workspace: uri}`` mapping),
404 for an unknown workspace, and 401 when the bearer token is not TOKEN (nor, when
``$TT_STANDIN_TOKEN_KEY`` is set, a live token signed with it: see
``tests.faultproxy.mint_token``). Every request
line is printed (never a header), so the tests can count calls.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.faultproxy import token_is_valid

_WORKSPACE_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/?]+)",
    re.IGNORECASE,
)


def main(port: int, cert: str, key: str, token: str, workspaces: dict[str, str]) -> None:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            print(f"GET {self.path}", flush=True)
            header = self.headers.get("Authorization")
            key = os.environ.get("TT_STANDIN_TOKEN_KEY")
            if header != f"Bearer {token}" and not (key and token_is_valid(key, header)):
                self._send(
                    401,
                    {"error": {"code": "InvalidAuthenticationToken", "message": "bad token"}},
                )
                return
            match = _WORKSPACE_PATH.match(self.path)
            if match is None or match["ws"] not in workspaces:
                self._send(
                    404,
                    {"error": {"code": "ResourceNotFound", "message": "no such workspace"}},
                )
                return
            sub, rg, ws = match["sub"], match["rg"], match["ws"]
            self._send(
                200,
                {
                    "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                    f"Microsoft.MachineLearningServices/workspaces/{ws}",
                    "name": ws,
                    "type": "Microsoft.MachineLearningServices/workspaces",
                    "location": "westeurope",
                    "kind": "Default",
                    "properties": {
                        "friendlyName": ws,
                        "mlFlowTrackingUri": workspaces[ws],
                        "discoveryUrl": "https://westeurope.api.azureml.ms/discovery",
                    },
                },
            )

        def log_message(self, format: str, *args: object) -> None:  # quiet: no headers
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5]))
