/**
 * The session table: for each (client_id, session) the highest msg_id accepted so far and the
 * connection that owns it, so a client that reconnects learns where to resume and a stale
 * connection can be taken over. Bounded: past `maxSessions` the least recently greeted is
 * forgotten (its connection, if any, keeps its own reference and goes on working).
 *
 * @module
 */

/** Something that can hold a session: a connection. */
export interface SessionOwner {
  /** Ends this owner's hold: tells its peer, waits for its queued records, then closes. */
  takeOver(): Promise<void>;
}

/** One session's state. Session 0 gets a private one per connection, never in the table. */
export interface Session {
  /** Highest msg_id accepted (queued) in this session; 0 before the first. */
  lastId: number;
  /** The connection serving the session now, or null. */
  owner: SessionOwner | null;
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

  /** Finds or creates the session (client_id, session) and marks it recently used. */
  open(clientId: number, session: bigint): Session {
    const key = `${clientId}/${session}`;
    let entry = this.#map.get(key);
    if (entry !== undefined) {
      this.#map.delete(key);
    } else {
      entry = { lastId: 0, owner: null };
      if (this.#map.size >= this.#max) {
        const oldest = this.#map.keys().next();
        if (!oldest.done) this.#map.delete(oldest.value);
      }
    }
    this.#map.set(key, entry);
    return entry;
  }
}
