/**
 * The floor under msgserver's latency: what Deno itself costs on this machine for the pieces one
 * message at a time is made of, with no msgserver code in the way (issue 14).
 *
 * - A loopback TCP ping-pong between two Deno processes, shaped like `--preset latency`: the
 *   client writes a 115-byte frame (a MSG with a 100-byte payload), the server reads it and
 *   answers 13 bytes (an ACK). Then the same with the server also appending a 100-byte line to a
 *   file before it answers, with `writeSync`, and with an `await`ed asynchronous `write`.
 * - One 100-byte append to a file, `writeSync` against `await write`, in one process.
 * - One promise hop (`await` of a promise resolved by another task), in one process.
 *
 * The ping-pong variants take turns, `--rounds` rounds of `--count` round trips each, so a
 * machine that drifts drifts for all of them alike. Run it with `deno task bench:floor`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Histogram } from "../histogram.ts";

const FRAME_BYTES = 115;
const ACK_BYTES = 13;
const LINE = new TextEncoder().encode("1 1 bench " + "a".repeat(89) + "\n"); // 100 bytes

/** What the server does per message, sent as the first byte of each connection. */
const VARIANTS = [
  { code: 0, label: "ping-pong: read, write 13 B" },
  { code: 1, label: "  + writeSync 100 B to a file" },
  { code: 2, label: "  + await write 100 B to a file" },
] as const;

/** The server side: answers each 115-byte frame with 13 bytes, after the variant's file work. */
async function serve(dir: string): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(listener.addr.port);
  for await (const conn of listener) {
    conn.setNoDelay(true);
    void (async () => {
      const file = await Deno.open(`${dir}/floor-${crypto.randomUUID()}.log`, {
        append: true,
        create: true,
      });
      const buf = new Uint8Array(64 * 1024);
      const ack = new Uint8Array(ACK_BYTES);
      let mode = -1;
      let have = 0;
      try {
        for (;;) {
          const n = await conn.read(buf.subarray(have));
          if (n === null) break;
          have += n;
          let at = 0;
          if (mode < 0) {
            mode = buf[0]!;
            at = 1;
          }
          while (have - at >= FRAME_BYTES) {
            at += FRAME_BYTES;
            if (mode === 1) file.writeSync(LINE);
            else if (mode === 2) await file.write(LINE);
            let done = 0;
            while (done < ACK_BYTES) done += await conn.write(ack.subarray(done));
          }
          buf.copyWithin(0, at, have);
          have -= at;
        }
      } finally {
        file.close();
        conn.close();
      }
    })();
  }
}

/** Round trips of one variant: `count` frames, one at a time, each latency in `hist`. */
async function pingPong(port: number, code: number, count: number, hist: Histogram) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const frame = new Uint8Array(FRAME_BYTES);
  const buf = new Uint8Array(1024);
  try {
    await conn.write(new Uint8Array([code]));
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      let done = 0;
      while (done < FRAME_BYTES) done += await conn.write(frame.subarray(done));
      let got = 0;
      while (got < ACK_BYTES) {
        const n = await conn.read(buf);
        if (n === null) throw new Error("Cannot finish the ping-pong: the server closed");
        got += n;
      }
      hist.record((performance.now() - t0) * 1000);
    }
  } finally {
    conn.close();
  }
}

/** Each call of `fn` timed, `count` times after `count / 10` unmeasured. */
async function timeEach(count: number, fn: () => unknown): Promise<Histogram> {
  const hist = new Histogram();
  for (let i = 0; i < count / 10; i++) await fn();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await fn();
    hist.record((performance.now() - t0) * 1000);
  }
  return hist;
}

function row(label: string, h: Histogram): string {
  const f = (v: number) => v < 100 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US");
  return `${label.padEnd(34)} ${f(h.valueAtPercentile(50)).padStart(7)} ` +
    `${f(h.valueAtPercentile(90)).padStart(7)} ${f(h.valueAtPercentile(99)).padStart(7)} ` +
    `${f(h.mean).padStart(7)}`;
}

const USAGE = `Usage: deno task bench:floor [--count N] [--rounds N]

What Deno itself costs here, with no msgserver code: a loopback ping-pong between two Deno
processes, the same with a 100-byte file append (writeSync, or await write), one append alone, a
promise hop and a timer; p50, p90, p99 and mean in microseconds.

  --count N    round trips per variant and round (default 5000, at least 100)
  --rounds N   rounds, the variants taking turns in each (default 4)
  --help       this text`;

async function main(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        count: { type: "string", default: "5000" },
        rounds: { type: "string", default: "4" },
        serve: { type: "string" },
        help: { type: "boolean" },
      },
    }));
  } catch (e) {
    console.error(`floor: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.serve !== undefined) {
    await serve(values.serve);
    return 0;
  }
  const count = Number(values.count);
  const rounds = Number(values.rounds);
  if (!(count >= 100) || !(rounds >= 1)) {
    console.error("floor: --count must be at least 100 and --rounds at least 1");
    return 2;
  }
  const dir = await Deno.makeTempDir({ prefix: "msgserver-floor-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", import.meta.filename!, "--serve", dir],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    const port = Number(new TextDecoder().decode(value).trim());
    const hists = VARIANTS.map(() => new Histogram());
    for (const v of VARIANTS) await pingPong(port, v.code, count / 10, new Histogram()); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (const v of VARIANTS) await pingPong(port, v.code, count, hists[v.code]!);
    }
    const file = await Deno.open(`${dir}/local.log`, { append: true, create: true });
    const writeSync = await timeEach(count, () => file.writeSync(LINE));
    const writeAsync = await timeEach(count, () => file.write(LINE));
    file.close();
    const hop = await timeEach(count, () => new Promise<void>((r) => queueMicrotask(r)));
    const loopTurn = await timeEach(count, () => new Promise<void>((r) => setTimeout(r, 0)));
    console.log(
      `floor: Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, loopback; ` +
        `${rounds} rounds x ${count} round trips per variant, taking turns`,
    );
    console.log(
      `${"us".padEnd(34)} ${"p50".padStart(7)} ${"p90".padStart(7)} ` +
        `${"p99".padStart(7)} ${"mean".padStart(7)}`,
    );
    for (const v of VARIANTS) console.log(row(v.label, hists[v.code]!));
    console.log(row("file append 100 B, writeSync", writeSync));
    console.log(row("file append 100 B, await write", writeAsync));
    console.log(row("promise hop (queueMicrotask)", hop));
    console.log(row("event loop turn (setTimeout 0)", loopTurn));
    return 0;
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
