"""The cost of hooks and telemetry on throughput: on versus off, in the same run.

The same messages go through MessageClient.send_many under each setting:

  off        MAILER_OTEL=off, no hook, outcome records not enabled (the default)
  hooks pass one before_send hook that returns the message as it is, and one
             after_send hook: the cost of the mechanism
  hooks edit two before_send hooks that each add a header (a new Message,
             validated again) and one after_send hook
  json logs  every outcome record formatted as JSON (cli/logs.py) to /dev/null
  otel api   MAILER_OTEL=on with the API only (no SDK: no-op spans; ``auto``
             stays off without a provider)
  otel sdk   the OpenTelemetry SDK: spans through a BatchSpanProcessor to an
             in-memory exporter, metrics to an in-memory reader
  all on     hooks edit + JSON logs + the SDK

Two transports: ``memory`` (MemoryTransport: the pipeline with no socket, so
the overhead is as large a share as it can be) and ``smtp`` (a fast SMTP sink
in another process, 5 connections, PIPELINING). Rounds are interleaved and a
figure is the median of the rounds; the ratio is of this process's CPU time per
message to that of ``off`` in the same round (steadier than the clock on a
shared machine).

    .venv/bin/python benchmarks/hooks_telemetry.py           # ~2 min
    .venv/bin/python benchmarks/hooks_telemetry.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sinks import Sink

from mailer import Hooks, MailerSettings, Message, MessageClient, SendResult
from mailer.cli.logs import JSONFormatter
from mailer.delivery.otel import OpenTelemetry
from mailer.transports import MemoryTransport, Transport

CONFIGS = (
    "off",
    "hooks pass",
    "hooks edit",
    "json logs",
    "otel api",
    "otel sdk",
    "all on",
)


def tag(name: str) -> Callable[[Message], Message]:
    def hook(message: Message) -> Message:
        return dataclasses.replace(message, headers=(*message.headers, (name, "1")))

    return hook


class Counted:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: Message, result: SendResult) -> None:
        self.count += 1


def messages(count: int) -> list[Message]:
    return [
        Message(to=f"user{n}@example.test", subject=f"n{n}", body=f"body {n}\n" * 20)
        for n in range(count)
    ]


async def one_run(
    config: str, transport: Transport | None, port: int | None, count: int
) -> tuple[float, float]:
    """Send ``count`` messages under ``config``.

    Returns:
        Messages per second (wall clock), and this process's CPU microseconds
        per message (threads included: the SDK's span exporter too).
    """
    values: dict[str, Any] = {
        "_env_file": None,
        "from_": "bench@example.test",
        "otel": "on" if config == "otel api" else "off",
        "smtp_host": "127.0.0.1",
        "smtp_tls": "none",
    }
    if port is not None:
        values["smtp_port"] = port
    settings = MailerSettings(**values)
    hooks = None
    if config == "hooks pass":
        hooks = Hooks(before_send=[lambda message: message], after_send=[Counted()])
    if config in ("hooks edit", "all on"):
        hooks = Hooks(before_send=[tag("X-A"), tag("X-B")], after_send=[Counted()])
    telemetry = None
    providers: list[Any] = []
    if config in ("otel sdk", "all on"):
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        providers = [tracer_provider, meter_provider]
        telemetry = OpenTelemetry(
            settings, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    logger = logging.getLogger("mailer.outcome")
    handler: logging.Handler | None = None
    if config in ("json logs", "all on"):
        # Opened once per run, before the clock starts.
        handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115, ASYNC230
        handler.setFormatter(JSONFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        client = MessageClient(
            settings, transport=transport, hooks=hooks, telemetry=telemetry
        )
        batch = messages(count)
        async with client:
            started, cpu = time.perf_counter(), time.process_time()
            results = await client.send_many(batch)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
        assert all(r.is_sent for r in results), "a message was not sent"
        return count / elapsed, cpu / count * 1e6
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.stream.close()  # type: ignore[attr-defined]
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
        for provider in providers:
            provider.shutdown()


async def scenario(name: str, rounds: int, count: int, sink: Sink | None) -> None:
    rates: dict[str, list[float]] = {config: [] for config in CONFIGS}
    cpus: dict[str, list[float]] = {config: [] for config in CONFIGS}
    ratios: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for _ in range(rounds):
        this_round: dict[str, tuple[float, float]] = {}
        for config in CONFIGS:
            transport = MemoryTransport() if sink is None else None
            port = sink.port if sink is not None else None
            this_round[config] = await one_run(config, transport, port, count)
        for config in CONFIGS:
            rate, cpu = this_round[config]
            rates[config].append(rate)
            cpus[config].append(cpu)
            ratios[config].append(cpu / this_round["off"][1])
    print(
        f"{name}: {count} messages, median of {rounds} interleaved rounds; "
        "CPU is this process's (steadier than the clock on a shared machine)"
    )
    for config in CONFIGS:
        rate = statistics.median(rates[config])
        cpu = statistics.median(cpus[config])
        ratio = statistics.median(ratios[config])
        print(
            f"  {config:11s} {rate:9.0f} msg/s  {cpu:7.1f} CPU us/msg  "
            f"{ratio:5.2f} x the CPU of off"
        )


async def main(quick: bool) -> None:
    rounds = 3 if quick else 5
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average {load}")
    await scenario("memory", rounds, 2000 if quick else 5000, None)
    sink = Sink("fast")
    try:
        await scenario(
            "smtp (fast sink, 5 connections)", rounds, 2000 if quick else 5000, sink
        )
    finally:
        sink.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    asyncio.run(main(parser.parse_args().quick))
