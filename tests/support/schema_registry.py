"""A small stand-in for a Confluent schema registry, serving the REST subset Ferry and Confluent's Python
AvroDeserializer use (no Confluent registry can be installed on the build machines):

  POST /subjects/{subject}/versions       {"schema": "..."} -> {"id": N}  (same schema text, same id)
  GET  /schemas/ids/{id}                  -> {"schema": "..."}
  GET  /subjects/{subject}/versions       -> [1, 2, ...]
  GET  /subjects/{subject}/versions/latest-> {"subject", "version", "id", "schema"}

Usage: schema_registry.py PORT [CERT KEY USER:PASSWORD]
With a certificate and key it serves https, and answers 401 to requests without HTTP basic auth for USER:PASSWORD.
"""
import base64
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

credentials = None  # the expected Authorization header, when set

schemas = {}  # id -> schema text
subjects = {}  # subject -> [id, ...] in version order


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        if credentials is None or self.headers.get("Authorization") == credentials:
            return True
        self.reply(401, {"error_code": 401, "message": "Unauthorized"})
        return False

    def do_POST(self):
        if not self.authorized():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            text = body["schema"]
            json.loads(text)  # must be JSON
            found = [i for i, s in schemas.items() if s == text]
            schema_id = found[0] if found else len(schemas) + 1
            schemas[schema_id] = text
            versions = subjects.setdefault(parts[1], [])
            if schema_id not in versions:
                versions.append(schema_id)
            return self.reply(200, {"id": schema_id})
        self.reply(404, {"error_code": 404, "message": "not found"})

    def do_GET(self):
        if not self.authorized():
            return
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"] and int(parts[2]) in schemas:
            return self.reply(200, {"schema": schemas[int(parts[2])]})
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions" and parts[1] in subjects:
            return self.reply(200, list(range(1, len(subjects[parts[1]]) + 1)))
        if len(parts) == 4 and parts[0] == "subjects" and parts[1] in subjects:
            ids = subjects[parts[1]]
            version = len(ids) if parts[3] == "latest" else int(parts[3])
            schema_id = ids[version - 1]
            return self.reply(200, {"subject": parts[1], "version": version, "id": schema_id,
                                    "schema": schemas[schema_id]})
        self.reply(404, {"error_code": 40401, "message": "not found"})

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
if len(sys.argv) > 2:
    cert, key, user_password = sys.argv[2:5]
    credentials = "Basic " + base64.b64encode(user_password.encode()).decode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
