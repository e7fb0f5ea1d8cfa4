// Nodemailer's pooled SMTP transport, fed finished messages: the benchmarks' Node.js peer.
//
//   node benchmarks/nodemailer_peer.mjs --port P --messages FILE [--connections K]
//
// FILE holds the messages mailer built beforehand, each as one JSON line
// ({"from": ..., "to": [...], "length": N}) followed by its N bytes. They are
// all read into memory before the clock starts, then handed to sendMail() at
// once with their envelope and raw bytes: Nodemailer renders and builds
// nothing, its pool (K connections, 100 messages each, as mailer's defaults)
// only speaks SMTP. Prints one JSON line like benchmarks/clients.py: messages,
// seconds, rate, errors, CPU seconds and peak RSS of this process.
//
// The package is installed by benchmarks/nodemailer.py into benchmarks/.node
// (ignored by git); NODE_PATH or that folder's node_modules is where it is found.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '.node', 'package.json'));
const nodemailer = require('nodemailer');

function option(name, fallback) {
    const at = process.argv.indexOf(`--${name}`);
    if (at < 0) {
        if (fallback === undefined) throw new Error(`--${name} is required`);
        return fallback;
    }
    return process.argv[at + 1];
}

function readMessages(file) {
    const data = readFileSync(file);
    const messages = [];
    let offset = 0;
    while (offset < data.length) {
        const end = data.indexOf(0x0a, offset);
        const head = JSON.parse(data.subarray(offset, end).toString('utf8'));
        const raw = data.subarray(end + 1, end + 1 + head.length);
        messages.push({ envelope: { from: head.from, to: head.to }, raw });
        offset = end + 1 + head.length;
    }
    return messages;
}

const port = Number(option('port'));
const connections = Number(option('connections', '5'));
const messages = readMessages(option('messages'));

const transport = nodemailer.createTransport({
    pool: true,
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    maxConnections: connections,
    maxMessages: 100,
    // The sinks answer at once: no reason to wait longer than mailer does.
    connectionTimeout: 30000,
    socketTimeout: 60000,
});

const cpuBefore = process.cpuUsage();
const started = process.hrtime.bigint();
const outcomes = await Promise.allSettled(messages.map((message) => transport.sendMail(message)));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const cpu = process.cpuUsage(cpuBefore);
transport.close();
const errors = outcomes.filter((outcome) => outcome.status === 'rejected').length;
const firstError = outcomes.find((outcome) => outcome.status === 'rejected');
const line = {
    client: 'nodemailer',
    messages: messages.length,
    seconds: Math.round(seconds * 1000) / 1000,
    rate: Math.round((messages.length / seconds) * 10) / 10,
    errors,
    cpu_seconds: Math.round(((cpu.user + cpu.system) / 1e6) * 100) / 100,
    peak_rss_mb: Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10,
};
if (firstError) line.first_error = String(firstError.reason).slice(0, 200);
console.log(JSON.stringify(line));
