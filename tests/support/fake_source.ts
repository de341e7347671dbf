/**
 * A stream source that delivers what a script says: batches of sequences, with redeliveries,
 * gaps and failures on demand, over a stream held in a `Map` (a sequence absent from it is one the
 * stream no longer holds).
 *
 * @module
 */

import { ExportError, type SourceMessage, type StreamSource } from "../../src/export/source.ts";

/** Options of {@linkcode FakeSource}. */
export interface FakeSourceOptions {
  /** Sequences whose `get` fails as NATS failing past its timeout would. */
  failGet?: number[];
  /** Milliseconds `next` waits before answering `[]` once the script is done; 0 by default. */
  idleMs?: number;
  /**
   * What `next` delivers in place of the stream's message at these sequences, as a consumer on a
   * replica that disagrees with the leader would; `get` still answers with the stream's.
   */
  replica?: Map<number, SourceMessage>;
}

/** See the module comment. */
export class FakeSource implements StreamSource {
  readonly stream: Map<number, SourceMessage>;
  /** Every `get`, in order. */
  readonly gets: number[] = [];
  /** Every `commit`, in order. */
  readonly commits: number[] = [];
  closed = false;
  readonly #script: number[][];
  readonly #options: FakeSourceOptions;

  /** `script`: the batches `next` gives, by sequence, in turn; then `[]` for ever. */
  constructor(stream: SourceMessage[], script: number[][], options: FakeSourceOptions = {}) {
    this.stream = new Map(stream.map((m) => [m.seq, m]));
    this.#script = script.map((batch) => [...batch]);
    this.#options = options;
  }

  async next(): Promise<SourceMessage[]> {
    const batch = this.#script.shift();
    if (batch === undefined) {
      await new Promise((r) => setTimeout(r, this.#options.idleMs ?? 0));
      return [];
    }
    return batch.map((seq) => {
      const m = this.#options.replica?.get(seq) ?? this.stream.get(seq);
      if (m === undefined) throw new Error(`FakeSource: the script delivers ${seq}, not in it`);
      return m;
    });
  }

  get(seq: number): Promise<SourceMessage | null> {
    this.gets.push(seq);
    if (this.#options.failGet?.includes(seq) === true) {
      return Promise.reject(new ExportError("nats", `Cannot read sequence ${seq}: NATS failed`));
    }
    return Promise.resolve(this.stream.get(seq) ?? null);
  }

  commit(seq: number): void {
    this.commits.push(seq);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
