"""What the three role verbs (``jqodi cloud``, ``edge``, ``end``) share: connection flags and the exit."""
from __future__ import annotations

import os
import sys

__all__ = ["add_connection_arguments", "role_main"]


def add_connection_arguments(p) -> None:
    from jqodi.runtime.job import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_STARTUP_TIMEOUT_S, DEFAULT_TIMEOUT_S

    p.add_argument("--host", default=DEFAULT_HOST, help=f"rendezvous address (the cloud's; default {DEFAULT_HOST})")
    from jqodi.cli import _types as t

    p.add_argument("--port", type=t.port, default=DEFAULT_PORT, help=f"rendezvous port (default {DEFAULT_PORT})")
    p.add_argument("--timeout", type=t.positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds of silence before a peer counts as failed (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--startup-timeout", type=t.positive_float, default=DEFAULT_STARTUP_TIMEOUT_S, metavar="S",
                   help="seconds to wait for the rendezvous and for every role to join "
                        f"(default {DEFAULT_STARTUP_TIMEOUT_S:g})")
    p.add_argument("--message-log", default=None, metavar="FILE",
                   help="write every message's kind, peer and tensor shapes here (JSON) when the role ends")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="the job's secret (written by the cloud to <workdir>/job.token); default: "
                        "$JQODI_JOB_TOKEN. Never pass the token itself on the command line")
    p.add_argument("--threads", type=t.positive_int, default=None, metavar="N",
                   help="torch CPU threads of this role (default: $JQODI_THREADS, else every usable core)")
    p.add_argument("--bind-host", default=None, metavar="ADDR",
                   help="address this process's sockets bind to (default: loopback if the rendezvous is "
                        "on loopback, else the address that routes to it)")


def announce_emulation(role: str):
    """``serve_role``'s ``on_job`` for a role started by hand: the job comes from the cloud, and if it
    emulates, this role says so loudly on stderr (with how to turn it off)."""
    def on_job(job) -> None:
        notice = job.emulation.notice() if job.emulation is not None else None
        if notice:
            print(f"jqodi {role.split(':')[0]}: {notice}", file=sys.stderr, flush=True)
    return on_job


def role_main(role: str, args, *, after=None, serve=None, **kw) -> int:
    """Run a role for the CLI: one line on stderr and exit code 2 on failure, never a traceback.

    ``after(error)`` runs once the role has ended (``error``: ``None``, or the failure's line), in
    the same error mapping: the cloud writes the run's record and prints its report there. The
    edge and end roles announce an emulating job (:func:`announce_emulation`).

    ``serve``: what runs the role (default :func:`jqodi.runtime.process.serve_role`; a fleet's
    processes use :func:`jqodi.runtime.fleet_node.serve_fleet_role`), with the same keywords.

    Exits with ``os._exit`` so that gloo's background threads cannot hold the process.
    """
    # torch's C++ side logs every store/gloo timeout with a stack trace on stderr; our error line
    # names the role, the address and the timeout, so keep the C++ log to fatal errors (set before
    # torch is imported; TORCH_CPP_LOG_LEVEL=INFO brings it back)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from jqodi.errors import JqodiError, RuntimeFailure
    from jqodi.runtime.process import serve_role

    code = 0
    from jqodi.core.quant.heap import keep_freed_memory; keep_freed_memory()  # trains here (core/quant/heap.py)
    if args.threads:
        os.environ["JQODI_THREADS"] = str(args.threads)
    try:
        code = (serve or serve_role)(role, host=args.host, port=args.port, timeout_s=args.timeout,
                          startup_timeout_s=args.startup_timeout,
                          bind_host=args.bind_host, message_log=args.message_log,
                          token_file=args.token_file,
                          **({"on_job": announce_emulation(role)} if role != "cloud" and serve is None else {}),
                          **kw)
        if after is not None:
            after(None)
    except JqodiError as e:
        if after is not None and isinstance(e, RuntimeFailure):
            try:
                after(str(e))
            except Exception as e2:  # noqa: BLE001 - the run's own error is the line to show
                print(f"jqodi {role.split(':')[0]}: note: no record written: {e2}", file=sys.stderr)
        print(f"jqodi {role.split(':')[0]}: error: {e}", file=sys.stderr, flush=True)
        code = e.exit_code
    except OSError as e:  # the workdir, a token or log file, a socket address: one line, not a traceback
        from jqodi.cli import os_error_text

        print(f"jqodi {role.split(':')[0]}: error: {os_error_text(e)}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt:
        print(f"jqodi {role.split(':')[0]}: interrupted", file=sys.stderr, flush=True)
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
