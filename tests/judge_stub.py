"""A tiny OpenAI-compatible chat endpoint for the LLM-judge tests, run as its own process on localhost.

    python tests/judge_stub.py MODE     prints the port it listens on, then serves
MODE `longer`: answers the number of the longer summary (a consistent judge);
MODE `first`: always answers 1 (a judge with pure position bias)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        one, two = re.search(r"Summary 1:\n(.*?)\n\nSummary 2:\n(.*?)\n\nWhich", prompt, re.S).groups()
        answer = "1" if MODE == "first" or len(one) > len(two) else "2" if len(two) > len(one) else "tie"
        reply = json.dumps({"id": "stub", "object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def serve(mode: str) -> tuple[subprocess.Popen, str]:
    """Start the stub in a subprocess; return it and its base URL."""
    proc = subprocess.Popen([sys.executable, __file__, mode], stdout=subprocess.PIPE, text=True)
    port = proc.stdout.readline().strip()
    return proc, f"http://127.0.0.1:{port}/v1"


if __name__ == "__main__":
    MODE = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
