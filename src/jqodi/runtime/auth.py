"""Who may join a job: a per-job secret and an HMAC challenge–response over the rendezvous store.

torch.distributed's ``TCPStore`` and gloo authenticate nobody, so jqodi admits a process into a
job only after it proves that it knows the job's secret, *before* any process group forms:

1. The cloud starts a **generation**: a fresh random nonce ``G`` published at ``auth/v1/nonce``.
2. A joining role ``R`` takes an attempt number ``k`` (an atomic counter per role), makes its own
   nonce ``n`` and writes ``auth/v1/R/req/k = {n, HMAC(secret, "join|G|R|n")}``.
3. The cloud reads attempts in order and checks the MAC in constant time
   (:func:`hmac.compare_digest`). A wrong MAC, a nonce seen before (a replayed request), or a role
   that has already joined is refused with a reason at ``auth/v1/R/resp/k``; the cloud then
   goes on waiting for the real peer until its start-up timeout.
4. An admitted role gets ``{ok, HMAC(secret, "admit|G|R|n")}`` and checks it too (mutual
   authentication: a fake cloud cannot admit anyone).
5. Everything after admission lives under a **session prefix** ``HMAC(secret, "session|G")``
   that only holders of the secret can compute: the job itself and the keys gloo uses to form
   the process group. A stranger can neither read the job nor take a rank.

The secret is 32 random bytes written as 64 hex characters. It reaches processes through a
file (``--token-file``, created with mode 0600) or the ``JQODI_JOB_TOKEN`` environment
variable; never on a command line and never in logs, records or the trace store (the
:class:`JobSecret` object's ``repr`` hides it). See docs/runtime.md, "Threat model".
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Callable

from jqodi.errors import JqodiError, RuntimeFailure

__all__ = ["TOKEN_ENV", "TOKEN_FILE_NAME", "JobSecret", "AuthRefused", "new_secret", "load_secret",
           "write_token_file", "Gatekeeper", "join_job"]

TOKEN_ENV = "JQODI_JOB_TOKEN"
TOKEN_FILE_NAME = "job.token"
_PREFIX = "auth/v1"
_MIN_TOKEN_CHARS = 32
_POLL_S = 0.02


class AuthRefused(RuntimeFailure):
    """This process was refused admission into a job (wrong/missing secret, role taken)."""


class JobSecret:
    """The job's shared secret. Its ``repr``/``str`` never show the value."""

    __slots__ = ("_key",)

    def __init__(self, token: str):
        token = token.strip()
        if len(token) < _MIN_TOKEN_CHARS:
            raise JqodiError(f"job token: too short ({len(token)} characters; at least {_MIN_TOKEN_CHARS})")
        self._key = token.encode()

    def mac(self, *parts: str) -> str:
        """HMAC-SHA256 over ``parts`` joined by ``|`` (hex)."""
        return hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).hexdigest()

    def mac_bytes(self, data: bytes | memoryview, counter: int) -> bytes:
        """HMAC-SHA256 of one message body and its per-link sequence number (32 bytes)."""
        h = hmac.new(self._key, counter.to_bytes(8, "little"), hashlib.sha256)
        h.update(data)
        return h.digest()

    def session_prefix(self, generation: str) -> str:
        """The store prefix that only holders of the secret can compute."""
        return "s/" + self.mac("session", generation)[:32]

    def token(self) -> str:
        """The token itself, for writing the token file or a child process's environment."""
        return self._key.decode()

    def __repr__(self) -> str:
        return "JobSecret(<hidden>)"

    __str__ = __repr__


def new_secret() -> JobSecret:
    return JobSecret(secrets.token_hex(32))


def load_secret(token_file: str | os.PathLike | None = None) -> JobSecret | None:
    """The secret from ``token_file``, else from ``$JQODI_JOB_TOKEN``, else ``None``."""
    if token_file is not None:
        path = Path(token_file)
        try:
            text = path.read_text()
        except OSError as e:
            raise JqodiError(f"--token-file: cannot read {path}: {e.strerror or e}") from e
        try:
            return JobSecret(text)
        except JqodiError as e:
            raise JqodiError(f"--token-file {path}: {e}") from None
    env = os.environ.get(TOKEN_ENV)
    if env:
        try:
            return JobSecret(env)
        except JqodiError as e:
            raise JqodiError(f"${TOKEN_ENV}: {e}") from None
    return None


def write_token_file(path: str | os.PathLike, secret: JobSecret) -> Path:
    """Write the token to ``path`` readable by its owner only (0600), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.token() + "\n")
    os.replace(tmp, path)
    return path


def _key(role: str, what: str, k: int | None = None) -> str:
    return f"{_PREFIX}/{role}/{what}" + ("" if k is None else f"/{k}")


def _has(store, key: str) -> bool:
    return bool(store.check([key]))


class Gatekeeper:
    """The cloud's side: admits each expected role once per generation, refuses everyone else.

    ``admit_all`` blocks until every role in ``roles`` is admitted (or the start-up timeout);
    afterwards :meth:`keep_refusing` answers late claimants on a background thread until
    :meth:`stop`, so a second process claiming a joined role hears why instead of timing out.
    """

    def __init__(self, store, secret: JobSecret, roles: list[str], *,
                 log: Callable[[str], None] = lambda s: None):
        self.store = store
        self.secret = secret
        self.roles = list(roles)
        self.generation = secrets.token_hex(16)
        self.admitted: set[str] = set()
        self.refused: list[tuple[str, str]] = []
        self._next = {r: 1 for r in self.roles}
        self._seen_nonces: set[str] = set()
        self._log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store.set(f"{_PREFIX}/roles", json.dumps(self.roles))  # names only: who may knock
        store.set(f"{_PREFIX}/nonce", self.generation)

    @property
    def session_prefix(self) -> str:
        return self.secret.session_prefix(self.generation)

    def _answer(self, role: str, k: int) -> None:
        raw = self.store.get(_key(role, "req", k))
        reason = None
        try:
            req = json.loads(raw)
            nonce, mac = str(req["nonce"]), str(req["mac"])
        except (ValueError, KeyError, TypeError):
            nonce = mac = ""
            reason = "malformed join request"
        if reason is None and not hmac.compare_digest(mac, self.secret.mac("join", self.generation, role, nonce)):
            reason = "wrong or missing job token"
        elif reason is None and nonce in self._seen_nonces:
            reason = "replayed join request"
        elif reason is None and role in self.admitted:
            reason = f"role {role!r} has already joined this job"
        if nonce:
            self._seen_nonces.add(nonce)
        if reason is None:
            self.admitted.add(role)
            resp = {"ok": True, "mac": self.secret.mac("admit", self.generation, role, nonce)}
            self._log(f"cloud: admitted {role}")
        else:
            self.refused.append((role, reason))
            resp = {"ok": False, "reason": reason}
            self._log(f"cloud: refused a process claiming {role}: {reason}")
        self.store.set(_key(role, "resp", k), json.dumps(resp))

    def poll_once(self) -> None:
        for role in self.roles:
            while _has(self.store, _key(role, "req", self._next[role])):
                self._answer(role, self._next[role])
                self._next[role] += 1

    def admit_all(self, startup_timeout_s: float) -> None:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            self.poll_once()
            if self.admitted.issuperset(self.roles):
                return
            if time.monotonic() > deadline:
                missing = [r for r in self.roles if r not in self.admitted]
                why = f"; refused: {', '.join(f'{r} ({w})' for r, w in self.refused)}" if self.refused else ""
                raise RuntimeFailure(f"cloud: {', '.join(missing)} did not join within {startup_timeout_s:g} s"
                                     f"{why}", peer=missing[0])
            time.sleep(_POLL_S)

    def keep_refusing(self) -> None:
        def loop():
            while not self._stop.wait(0.1):
                try:
                    self.poll_once()
                except Exception:  # noqa: BLE001 - the store went away with the job
                    return
        self._thread = threading.Thread(target=loop, name="cloud-gatekeeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def join_job(store, secret: JobSecret | None, role: str, startup_timeout_s: float) -> str:
    """A joining role's side: prove knowledge of the secret; returns the session prefix.

    Raises :class:`AuthRefused` (one line) when the cloud refuses, when the cloud's answer does not
    prove that *it* knows the secret, or when no answer comes within the start-up timeout.
    """
    if secret is None:
        raise AuthRefused(f"{role}: no job token (give --token-file FILE or set ${TOKEN_ENV}; "
                          f"the cloud writes the token to <workdir>/{TOKEN_FILE_NAME})", peer=role)
    deadline = time.monotonic() + startup_timeout_s
    roles = json.loads(store.get(f"{_PREFIX}/roles"))
    if role not in roles:
        edges = [r.split(":", 1)[1] for r in roles if r.startswith("edge:")]
        raise AuthRefused(f"{role}: not part of this job (its edges are: {', '.join(edges)})", peer=role)
    generation = store.get(f"{_PREFIX}/nonce").decode()
    k = int(store.add(_key(role, "attempts"), 1))
    nonce = secrets.token_hex(16)
    store.set(_key(role, "req", k), json.dumps({"nonce": nonce, "mac": secret.mac("join", generation, role, nonce)}))
    resp_key = _key(role, "resp", k)
    while not _has(store, resp_key):
        if time.monotonic() > deadline:
            raise AuthRefused(f"{role}: the cloud did not answer the join request within {startup_timeout_s:g} s",
                              peer="cloud")
        time.sleep(_POLL_S)
    try:
        resp = json.loads(store.get(resp_key))
    except ValueError:
        raise AuthRefused(f"{role}: malformed answer from the cloud", peer="cloud") from None
    if not resp.get("ok"):
        raise AuthRefused(f"{role}: refused by the cloud: {resp.get('reason', 'no reason given')}", peer=role)
    if not hmac.compare_digest(str(resp.get("mac", "")), secret.mac("admit", generation, role, nonce)):
        raise AuthRefused(f"{role}: the rendezvous answered without knowing the job token "
                          f"(not this job's cloud)", peer="cloud")
    return secret.session_prefix(generation)
