"""Seeds a fuzz node with real things to act on and writes schemathesis' config.

    python3 scripts/fuzz_seed.py BASE_URL CONFIG_OUT TOKEN_OUT

Registers `fuzzuser` (whose token the fuzzer uses, written to TOKEN_OUT), `fuzzpeer` and
`fuzzother`; makes a group of fuzzuser and fuzzpeer with one message in it; has fuzzother
ask fuzzuser to be a contact. CONFIG_OUT pins the path ids of the calls on those things
(the group's calls; leaving, on a second group; the friend request's answers; contacts and
blocks of fuzzother), so those calls reach the node's logic instead of answering 404 to
random ids. Bodies, queries and every other call stay fuzzed.
"""

import json
import sys
import urllib.error
import urllib.request


def call(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {path} answered {e.code}: {e.read().decode(errors='replace')}")
    except urllib.error.URLError as e:
        sys.exit(f"{method} {path} failed: {e.reason}")


def register(base, name):
    answer = call(base, "POST", "/api/v1/auth/register",
                  {"username": name, "password": "fuzzpassword1"})
    return answer["user_id"], answer["token"]


def main():
    base, config_out, token_out = sys.argv[1:4]
    user, token = register(base, "fuzzuser")
    peer, _ = register(base, "fuzzpeer")
    other, other_token = register(base, "fuzzother")
    spare = call(base, "POST", "/api/v1/conversations",
                 {"kind": "group", "title": "fuzz spare", "members": [peer]}, token)["conversation"]["id"]
    conv = call(base, "POST", "/api/v1/conversations",
                {"kind": "group", "title": "fuzz", "members": [peer]}, token)["conversation"]["id"]
    seq = call(base, "POST", f"/api/v1/conversations/{conv}/messages",
               {"cid": "fuzz-seed", "body": "hello"}, token)["seq"]
    request = call(base, "POST", "/api/v1/contacts/requests", {"user": user}, other_token)["request"]["id"]
    config = f"""# Written by scripts/fuzz_seed.py for one fuzz run.
[[operations]]
include-path-regex = '^/api/v1/conversations/\\{{id\\}}(?!/leave$)'
parameters = {{ "path.id" = {conv}, "path.seq" = {seq}, "path.user" = {peer} }}

[[operations]]
include-path = '/api/v1/conversations/{{id}}/leave'
parameters = {{ "path.id" = {spare} }}

[[operations]]
include-path-regex = '^/api/v1/contacts/requests/\\{{id\\}}/'
parameters = {{ "path.id" = {request} }}

[[operations]]
include-path-regex = '^/api/v1/(contacts|blocks)/\\{{user\\}}$'
parameters = {{ "path.user" = {other} }}
"""
    with open(config_out, "w") as f:
        f.write(config)
    with open(token_out, "w") as f:
        f.write(token)
    print(f"fuzz seed: group {conv} (message {seq}) of users {user} and {peer}, "
          f"friend request {request} from user {other}")


if __name__ == "__main__":
    main()
