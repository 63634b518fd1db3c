"""`python -m runner.fake`: run a fake service until SIGTERM or SIGINT.

Prints exactly one line, the base URL, once the server is listening, so a parent process
can read it: `url = proc.stdout.readline().strip()`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from runner.fake import PROTOCOLS, FakeServer
from runner.fake.config import CHOICES, ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runner.fake", description="Serve a fake Suno-style API on loopback."
    )
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="sunoapi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--config", metavar="FILE", help="a JSON configuration file")
    parser.add_argument("--latency-scale", type=float, help="wall seconds per model second")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--credits", type=int, help="the starting balance")
    parser.add_argument("--seed", type=int, help="seed of the latency, id and fault draws")
    parser.add_argument("--fault", action="append", default=[], metavar="JSON",
                        help="add a fault rule (repeatable), e.g. "
                        '\'{"match": {"path": "/api/v1/generate"}, "action": {"endless": true}}\'')
    # The documented shapes a host may answer in (config.py names each reading).
    parser.add_argument("--record-style", choices=CHOICES["record_style"],
                        help="music record-info items: sunoData camelCase or api.box's "
                             "response.data snake_case")
    parser.add_argument("--running-status", metavar="WORD",
                        help="the word a running music task reports (e.g. GENERATING)")
    parser.add_argument("--relay-fail-status", choices=CHOICES["relay_fail_status"],
                        help="the relay's failed-task status word")
    parser.add_argument("--credits-endpoint", choices=CHOICES["credits_endpoint"],
                        help="which balance endpoint the host serves")
    parser.add_argument("--unfinished", choices=CHOICES["unfinished_work"],
                        dest="unfinished_work",
                        help="sunoapi: accept (default) or refuse work on a music task that "
                             "has reached only its first stage (config unfinished_work)")
    parser.add_argument("--unfinished-code", metavar="CODE",
                        help="the envelope code of that refusal (default 400)")
    parser.add_argument("--unfinished-http-status", type=int, metavar="STATUS",
                        help="the HTTP status of that refusal (default 200, as envelopes)")
    parser.add_argument("--unfinished-message", metavar="TEXT",
                        help="its message; {task_id} names the task")
    parser.add_argument("--record-lag", type=float, metavar="SECONDS",
                        help="sunoapi: for this many model seconds after a music task "
                             "succeeded, refuse work that reads it as unfinished (as "
                             "--unfinished refuse answers) while record-info already says "
                             "SUCCESS and callbacks are sent: a host whose record lags "
                             "(config record_lag, default 0)")
    parser.add_argument("--record-lag-answer", choices=CHOICES["record_lag_answer"],
                        help="sunoapi: how that lag refuses: with words saying the task "
                             "has not finished (unfinished, default: as --unfinished-code "
                             "and --unfinished-message say), or a bare envelope code that "
                             "does not say why: 404 not found, 400 or 422 validation error "
                             "(config record_lag_answer)")
    parser.add_argument("--record-lag-refusals", type=int, metavar="N",
                        help="sunoapi: the lag also ends after it refused N requests that "
                             "read the task, whatever the clock says (config "
                             "record_lag_refusals)")
    parser.add_argument("--empty-required", choices=CHOICES["empty_required"],
                        help="whether an empty negativeTags (documented as required) counts "
                             "as given (default accept)")
    parser.add_argument("--aligned-words", choices=CHOICES["aligned_words"],
                        help="sunoapi timestamped lyrics: the words alone (plain, default), "
                             "or carrying line breaks and section tags before a line's "
                             "first word (leading) or after its last (trailing)")
    return parser


def _code(text: str | None) -> int | str | None:
    """An envelope code from the command line: a number when it is one."""
    if text is None:
        return None
    return int(text) if text.strip().lstrip("-").isdigit() else text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config: dict[str, Any] = {}
    try:
        if args.config:
            with open(args.config, encoding="utf-8") as fh:
                config = json.load(fh)
        flags = {
            "latency_scale": args.latency_scale,
            "api_key": args.api_key,
            "credits": args.credits,
            "seed": args.seed,
            "record_style": args.record_style,
            "running_status": args.running_status,
            "relay_fail_status": args.relay_fail_status,
            "credits_endpoint": args.credits_endpoint,
            "empty_required": args.empty_required,
            "aligned_words": args.aligned_words,
            "record_lag": args.record_lag,
            "record_lag_answer": args.record_lag_answer,
            "record_lag_refusals": args.record_lag_refusals,
        }
        if not isinstance(config, dict):
            raise ConfigError("the configuration file must hold a JSON object")
        config.update({k: v for k, v in flags.items() if v is not None})
        if args.fault:
            config["faults"] = [*config.get("faults", []), *map(json.loads, args.fault)]
        if args.unfinished_work is not None:
            config["unfinished_work"] = args.unfinished_work
        refusal = {"code": _code(args.unfinished_code), "http_status":
                   args.unfinished_http_status, "message": args.unfinished_message}
        refusal = {k: v for k, v in refusal.items() if v is not None}
        if refusal:
            base = config.get("unfinished_refusal")
            config["unfinished_refusal"] = {**(base if isinstance(base, dict) else {}),
                                            **refusal}
        server = FakeServer(args.protocol, host=args.host, port=args.port, config=config)
        server.start()
    except (OSError, ValueError) as exc:  # ConfigError and JSONDecodeError are ValueErrors
        print(f"runner.fake: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(server.url, flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
