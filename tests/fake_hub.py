"""A stand-in for the Hugging Face Hub on loopback: the few endpoints huggingface_hub's
snapshot_download uses (revision info, file tree, resolve with HEAD/GET and byte ranges), gated
repositories that want a token, and a log of every request."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: Dict[str, Dict[str, bytes]], gated: Optional[Dict[str, str]] = None):
        self.repos = repos
        self.gated = gated or {}  # repo -> the token it requires
        self.cut_once = {}  # file name -> bytes after which its first transfer breaks off
        self.stall_once = {}  # file name -> bytes after which its first transfer stops sending (no close)
        self.stalled = threading.Event()
        self.log = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub._handle(self, head=False)

            def do_HEAD(self):
                hub._handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def file_gets(self, repo: str):
        """Paths of the files of `repo` whose content was requested (GET on resolve)."""
        prefix = f"/{repo}/resolve/{SHA}/"
        return [p[len(prefix):] for m, p, *_ in self.log if m == "GET" and p.startswith(prefix)]

    @staticmethod
    def _send(h, code, body=b"", headers=None, head=False):
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _handle(self, h, head):
        path = h.path.split("?")[0]
        self.log.append((h.command, path, h.headers.get("Authorization"), h.headers.get("Range")))
        api = path.startswith("/api/models/")
        parts = path[len("/api/models/"):].split("/") if api else path.strip("/").split("/")
        repo = "/".join(parts[:2])
        if repo not in self.repos:
            return self._send(h, 404, b'{"error": "Repository not found"}',
                              {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"}, head)
        token = self.gated.get(repo)
        is_info = api and len(parts) > 2 and parts[2] == "revision"
        if token and not is_info and h.headers.get("Authorization") != f"Bearer {token}":
            return self._send(h, 401, b'{"error": "Access to this model is restricted"}',
                              {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted",
                               "Content-Type": "application/json"}, head)
        files = self.repos[repo]
        if is_info:
            body = {"id": repo, "sha": SHA, "siblings": [{"rfilename": f} for f in files]}
            return self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        if api:  # the file tree
            body = [{"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest(),
                     "lfs": {"size": len(d), "oid": hashlib.sha256(d).hexdigest(), "pointerSize": 134}}
                    for f, d in files.items()]
            return self._send(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        data = files["/".join(parts[4:])]
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {"X-Repo-Commit": SHA, "X-Linked-Etag": etag, "ETag": etag, "X-Linked-Size": str(len(data)),
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        name = parts[-1]
        if not head and (name in self.cut_once or name in self.stall_once):
            stall = name in self.stall_once
            cut = (self.stall_once if stall else self.cut_once).pop(name)
            h.send_response(200)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:cut])
            h.wfile.flush()
            if stall:
                self.stalled.set()
                threading.Event().wait(60)  # the client is killed meanwhile
            else:
                h.close_connection = True
            return
        rng = h.headers.get("Range")
        if rng and not head:
            start = int(rng.split("=")[1].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(h, 206, data[start:], headers)
        return self._send(h, 200, data, headers, head)
