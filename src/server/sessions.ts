/**
 * The session table: for each (client_id, session) the highest msg_id accepted so far and the
 * connection that owns it, so a client that reconnects learns where to resume and a stale
 * connection can be taken over. Bounded: past `maxSessions` the least recently greeted is
 * forgotten (its connection, if any, keeps its own reference and goes on working).
 *
 * @module
 */

import { within } from "../io/within.ts";

/** Something that can hold a session: a connection. */
export interface SessionOwner {
  /** Ends this owner's hold: tells its peer and closes (its queued records still land). */
  takeOver(): void;
}

/**
 * One session's state. Session 0 gets a private one per connection, never in the table.
 *
 * Records of a session reach the file in order (one connection at a time, one FIFO queue, one
 * writer), so "every accepted id up to N is in the file" is one number, `safeId`, as long as no
 * record was refused for a storage error; a refusal freezes it until the next resume.
 */
export class Session {
  /** Highest msg_id accepted (queued) in this session; ids at or below it are duplicates. */
  lastId = 0;
  /** Highest msg_id such that every accepted id up to it is written. */
  safeId = 0;
  /** Records accepted and not yet written or refused. */
  pending = 0;
  /** Set when a record was refused after being accepted: `safeId` stops advancing. */
  broken = false;
  /** The connection serving the session now, or null. */
  owner: SessionOwner | null = null;
  /**
   * Whether the server knows where the session stands: true once it has been greeted in this
   * process, or the store held a record of it. A session the server created afresh and the
   * store knew nothing of is unknown: new, or forgotten (WELCOME says which it can tell).
   */
  known = false;
  /** The store lookup under way or done, shared by concurrent HELLOs; null before the first. */
  #recalled: Promise<void> | null = null;
  #idle: (() => void)[] = [];

  /**
   * Learns, once, where the store says this session stands (`lookup` resolves with its last
   * stored msg_id, or null when the store has no record). Throws what `lookup` throws, and then
   * asks again next time.
   */
  recall(lookup: () => Promise<number | null>): Promise<void> {
    this.#recalled ??= (async () => {
      if (this.known) return;
      const stored = await lookup();
      if (stored !== null && stored > this.safeId && this.pending === 0) {
        this.lastId = this.safeId = stored;
      }
      this.known = stored !== null;
    })().catch((e) => {
      this.#recalled = null;
      throw e;
    });
    return this.#recalled;
  }

  /**
   * For a store other servers append to: waits (at most `timeoutMs`) until nothing accepted
   * here is still on its way to the store, then asks the store where the session stands and
   * makes that the resume point, which it returns. Throws what `lookup` throws, and an Error
   * when records are still on their way after `timeoutMs` (the store cannot be asked yet: one of
   * them may yet land).
   */
  async reread(lookup: () => Promise<number | null>, timeoutMs: number): Promise<number> {
    if (this.pending > 0) await within(new Promise<void>((r) => this.#idle.push(r)), timeoutMs);
    if (this.pending > 0) {
      throw new Error(`${this.pending} records of the session are still on their way to the store`);
    }
    const stored = await lookup();
    // Above what this server stored, if another server stored more; never below it (the
    // store acknowledged those).
    this.lastId = this.safeId = Math.max(this.safeId, stored ?? 0);
    this.broken = false;
    this.known ||= stored !== null;
    return this.lastId;
  }

  /** `records` records up to `msgId` are in the file. */
  written(msgId: number, records: number): void {
    if (!this.broken) this.safeId = msgId;
    this.#settle(records);
  }

  /** `records` accepted records will never be written (storage error, or shutdown). */
  refused(records: number): void {
    this.broken = true;
    this.#settle(records);
  }

  #settle(records: number): void {
    this.pending -= records;
    if (this.pending <= 0 && this.#idle.length > 0) {
      for (const wake of this.#idle.splice(0)) wake();
    }
  }

  /**
   * Waits (at most `timeoutMs`) until nothing accepted is still on its way to the file, then
   * makes `safeId` the resume point: ids above it are accepted again, so a resuming client's
   * resends are written rather than refused as duplicates. Returns the resume point.
   */
  async resume(timeoutMs: number): Promise<number> {
    if (this.pending > 0) await within(new Promise<void>((r) => this.#idle.push(r)), timeoutMs);
    if (this.pending > 0 || this.broken) {
      // Some records may yet land, or some never will: resume from what is surely written and
      // accept the rest again (a record that lands after all is then written twice). While some
      // are still in flight the mark stays frozen, lest a late one move it past a refused id.
      this.lastId = this.safeId;
      this.broken = this.pending > 0;
    }
    return this.lastId;
  }
}

/**
 * The bounded table of sessions.
 *
 * @example
 * ```ts
 * const table = new SessionTable(1000);
 * const s = table.open(7, 42n);
 * s.lastId; // 0 the first time
 * ```
 */
export class SessionTable {
  readonly #max: number;
  readonly #map = new Map<string, Session>();

  constructor(maxSessions: number) {
    this.#max = maxSessions;
  }

  /** Sessions remembered now. */
  get size(): number {
    return this.#map.size;
  }

  /**
   * Forgets the least recently greeted session that nobody holds and that has nothing on its way
   * to the file. Sessions in use are never forgotten (forgetting one would let a second HELLO
   * start it afresh beside the first); they are at most one per connection, so the table stays
   * bounded by MAX_SESSIONS + MAX_CONNECTIONS.
   */
  #evictOne(): void {
    for (const [key, session] of this.#map) {
      if (session.owner === null && session.pending <= 0) {
        this.#map.delete(key);
        return;
      }
    }
  }

  /** Finds or creates the session (client_id, session) and marks it recently used. */
  open(clientId: number, session: bigint): Session {
    const key = `${clientId}/${session}`;
    let entry = this.#map.get(key);
    if (entry !== undefined) {
      this.#map.delete(key);
    } else {
      entry = new Session();
      if (this.#map.size >= this.#max) this.#evictOne();
    }
    this.#map.set(key, entry);
    return entry;
  }
}
