import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { Logger } from "../src/log.ts";
import { FileStore, type OpenFile } from "../src/store/file_store.ts";
import type { Batch } from "../src/store/store.ts";
import { withTempDir } from "./support/server.ts";

const enc = new TextEncoder();

function batch(lines: string): Batch {
  const bytes = enc.encode(lines);
  return { bytes, records: lines.split("\n").length - 1, runs: [] };
}

/** Runs `fn` with a fresh folder and a logger whose lines are kept. */
function withDir(fn: (dir: string, logs: string[], log: Logger) => Promise<void>): Promise<void> {
  return withTempDir("msgserver_file_store_test_", (dir) => {
    const logs: string[] = [];
    return fn(dir, logs, new Logger("debug", (line) => logs.push(line)));
  });
}

/** Data files in `dir` whose names start with `prefix` (not the session journal), sorted. */
async function filesIn(dir: string, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(prefix) && !e.name.includes(".sessions")) names.push(e.name);
  }
  return names.sort();
}

/** An OpenFile that hands out real files and lets the test break the one appended to. */
class Files {
  /** Throws this many of the next opens, as a process out of file descriptors does. */
  failOpens = 0;
  /** The last data file (not the session journal) opened for appending. */
  last: Deno.FsFile | null = null;
  readonly open: OpenFile = async (path, options) => {
    if (this.failOpens > 0) {
      this.failOpens--;
      throw new Deno.errors.Busy(`Too many open files (os error 24): open '${path}'`);
    }
    const file = await Deno.open(path, options);
    if (options.append && !path.includes(".sessions")) this.last = file;
    return file;
  };
}

Deno.test("FileStore appends batches and tracks the file's size; new files get mode 0640", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    equal(store.size, 0);
    await store.append(batch("1 1 a x\n"));
    await store.append(batch("1 2 a y\n2 1 b z\n"));
    equal(store.size, 24);
    await store.close();
    equal(await Deno.readTextFile(path), "1 1 a x\n1 2 a y\n2 1 b z\n");
    equal((await Deno.stat(path)).mode! & 0o777, 0o640);
    const again = await FileStore.open(path, { durable: false, log });
    equal(again.size, 24);
    await again.close();
  });
});

Deno.test("FileStore moves a torn last line to <file>.torn at open and appends after the last whole line", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    await Deno.writeTextFile(path, "1 1 a x\n1 2 a half-writ");
    const store = await FileStore.open(path, { durable: true, log });
    equal(store.tornBytes, 15);
    equal(store.size, 8);
    await store.append(batch("1 2 a y\n"));
    await store.close();
    equal(await Deno.readTextFile(path), "1 1 a x\n1 2 a y\n");
    equal(await Deno.readTextFile(`${path}.torn`), "1 2 a half-writ");
    ok(logs.some((l) => l.includes("WARN moved a torn last line aside") && l.includes("bytes=15")));
  });
});

Deno.test("FileStore cuts the file back after a write fails midway, so no partial line stays", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const files = new Files();
    const store = await FileStore.open(path, { durable: false, log, openFile: files.open });
    await store.append(batch("1 1 a x\n"));
    const file = files.last!;
    const writeSync = file.writeSync.bind(file);
    let calls = 0;
    // (Small batches are written with writeSync.) The first write takes half the batch; the
    // next fails, as a disk filling up does.
    file.writeSync = (p: Uint8Array) => {
      if (++calls === 1) return writeSync(p.subarray(0, 5));
      throw new Error("No space left on device (os error 28)");
    };
    await rejects(async () => await store.append(batch("1 2 a y\n1 3 a z\n")), /No space left/);
    equal(await Deno.readTextFile(path), "1 1 a x\n");
    equal(store.size, 8);
    file.writeSync = writeSync;
    await store.append(batch("1 2 a y\n"));
    await store.close();
    equal(await Deno.readTextFile(path), "1 1 a x\n1 2 a y\n");
  });
});

Deno.test("FileStore appends nothing until a partial batch it could not cut back is gone", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const files = new Files();
    const store = await FileStore.open(path, { durable: false, log, openFile: files.open });
    const file = files.last!;
    const writeSync = file.writeSync.bind(file);
    const truncate = file.truncate.bind(file);
    let calls = 0;
    file.writeSync = (p: Uint8Array) => {
      if (++calls === 1) return writeSync(p.subarray(0, 3));
      throw new Error("I/O error");
    };
    file.truncate = () => Promise.reject(new Error("Read-only file system"));
    await rejects(async () => await store.append(batch("1 1 a x\n")), /I\/O error/);
    ok(logs.some((l) => l.includes("cannot cut the file back")), logs.join(""));
    equal(await Deno.readTextFile(path), "1 1");
    file.writeSync = writeSync;
    // Still cannot cut back: the next batch is refused, not glued onto the partial line.
    await rejects(async () => await store.append(batch("1 2 a y\n")), /Read-only/);
    equal(await Deno.readTextFile(path), "1 1");
    file.truncate = truncate;
    await store.append(batch("1 2 a y\n"));
    await store.close();
    equal(await Deno.readTextFile(path), "1 2 a y\n");
  });
});

Deno.test("FileStore syncs each batch in durable mode and not otherwise", async () => {
  for (const durable of [true, false]) {
    await withDir(async (dir, _logs, log) => {
      const files = new Files();
      const store = await FileStore.open(`${dir}/m.log`, { durable, log, openFile: files.open });
      const file = files.last!;
      let syncs = 0;
      const syncData = file.syncData.bind(file);
      file.syncData = () => {
        syncs++;
        return syncData();
      };
      await store.append(batch("1 1 a x\n"));
      await store.append(batch("1 2 a x\n"));
      equal(syncs, durable ? 2 : 0);
      equal(store.stats.syncSeconds.count, durable ? 2 : 0);
      equal(store.stats.writeSeconds.count, 2);
      await store.close();
    });
  }
});

Deno.test("FileStore.rotate() moves the file aside under a timestamped name and starts a new one", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: true, log });
    await store.append(batch("1 1 a x\n"));
    await store.rotate();
    await store.append(batch("1 2 a y\n"));
    await store.rotate();
    await store.append(batch("1 3 a z\n"));
    await store.close();
    const rotated = await filesIn(dir, "m.log.");
    equal(rotated.length, 2);
    for (const name of rotated) ok(/^m\.log\.\d{8}T\d{6}\.\d{3}Z(-\d+)?$/.test(name), name);
    deepStrictEqual(
      await Promise.all(rotated.map((n) => Deno.readTextFile(`${dir}/${n}`))),
      ["1 1 a x\n", "1 2 a y\n"],
    );
    equal(await Deno.readTextFile(path), "1 3 a z\n");
    equal(store.rotations, 2);
    equal(logs.filter((l) => l.includes("INFO rotated the data file")).length, 2);
  });
});

Deno.test("FileStore.rotate() recovers when the new file cannot be opened at once", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const files = new Files();
    const store = await FileStore.open(path, { durable: false, log, openFile: files.open });
    await store.append(batch("1 1 a x\n"));
    files.failOpens = 2;
    await store.rotate(); // renamed, but the new file cannot be opened
    await store.append(batch("1 2 a y\n")); // so this goes on into the rotated file
    await store.rotate(); // the open fails again
    await store.append(batch("1 3 a y\n"));
    const rotated = await filesIn(dir, "m.log.");
    equal(rotated.length, 1);
    await rejects(Deno.stat(path), Deno.errors.NotFound);
    await store.rotate(); // now it opens: no second rename of a file that is not there
    await store.append(batch("1 4 a z\n"));
    await store.close();
    deepStrictEqual(await filesIn(dir, "m.log."), rotated);
    equal(await Deno.readTextFile(`${dir}/${rotated[0]}`), "1 1 a x\n1 2 a y\n1 3 a y\n");
    equal(await Deno.readTextFile(path), "1 4 a z\n");
    equal(store.rotations, 1);
    ok(logs.some((l) => l.includes("cannot open a new data file")), logs.join(""));
    ok(!logs.some((l) => l.includes("cannot rotate")), logs.join(""));
  });
});

Deno.test("FileStore.reopen() continues in a new file after the old one was moved", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    await store.append(batch("1 1 a x\n"));
    await Deno.rename(path, `${path}.1`);
    await store.append(batch("1 2 a y\n")); // still the moved file, as logrotate expects
    await store.reopen();
    await store.append(batch("1 3 a z\n"));
    await store.close();
    equal(await Deno.readTextFile(`${path}.1`), "1 1 a x\n1 2 a y\n");
    equal(await Deno.readTextFile(path), "1 3 a z\n");
  });
});

/** A batch of lines of session (1, 7) with msg_ids `ids`, as the writer hands them over. */
function sessionBatch(ids: number[], session = 7n): Batch {
  const lines = ids.map((id) => `1 ${id} s m${id}\n`).join("");
  const bytes = enc.encode(lines);
  const source = {
    clientId: 1,
    session,
    sessionKey: `1/${session}`,
    batchSeq: 0,
    batchLastId: 0,
    batchRecords: 0,
    written() {},
    refuse() {},
  };
  return {
    bytes,
    records: ids.length,
    runs: [{
      source,
      lineStart: 0,
      lineEnd: bytes.length,
      firstId: ids[0]!,
      lastId: ids.at(-1)!,
      records: ids.length,
    }],
  };
}

/** Copies the data file and its journal as they are now, as a kill -9 would leave them. */
async function crashCopy(dir: string, path: string): Promise<string> {
  const copy = `${dir}/copy.log`;
  await Deno.copyFile(path, copy);
  await Deno.copyFile(`${path}.sessions`, `${copy}.sessions`);
  return copy;
}

Deno.test("FileStore keeps where each session stands across a restart (the session journal)", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    equal(await store.lastStored(1, 7n), null);
    await store.append(sessionBatch([1, 2, 3]));
    await store.append(sessionBatch([4]));
    await store.append(sessionBatch([1], 8n));
    equal(await store.lastStored(1, 7n), 4);
    // Killed now: the journal has a snapshot and three batch records.
    const copy = await crashCopy(dir, path);
    await store.close();
    const again = await FileStore.open(path, { durable: false, log });
    deepStrictEqual([await again.lastStored(1, 7n), await again.lastStored(1, 8n)], [4, 1]);
    await again.close();
    const afterKill = await FileStore.open(copy, { durable: false, log });
    deepStrictEqual([await afterKill.lastStored(1, 7n), await afterKill.lastStored(1, 8n)], [4, 1]);
    await afterKill.close();
  });
});

Deno.test("FileStore at start moves a torn last batch aside: its records were never acked, so the session resumes before it", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    await store.append(sessionBatch([1, 2]));
    const before = store.size;
    await store.append(sessionBatch([3, 4, 5]));
    const copy = await crashCopy(dir, path);
    await store.close();
    // The kill tore the last batch: two whole lines and part of the third reached the file.
    const torn = before + enc.encode("1 3 s m3\n1 4 s m4\n1 5").length;
    await Deno.truncate(copy, torn);
    const again = await FileStore.open(copy, { durable: false, log });
    equal(await again.lastStored(1, 7n), 2);
    equal(again.size, before);
    await again.close();
    equal(await Deno.readTextFile(copy), "1 1 s m1\n1 2 s m2\n");
    // One move, in file order: the batch's whole lines and the torn one after them.
    equal(await Deno.readTextFile(`${copy}.torn`), "1 3 s m3\n1 4 s m4\n1 5");
    ok(
      logs.some((l) => l.includes("moved a torn batch aside") && l.includes("bytes=21")),
      logs.join(""),
    );
  });
});

Deno.test("FileStore without its journal starts with sessions unknown, loudly, and keeps every record", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    await store.append(sessionBatch([1, 2]));
    await store.close();
    await Deno.remove(`${path}.sessions`);
    const again = await FileStore.open(path, { durable: false, log });
    equal(await again.lastStored(1, 7n), null);
    await again.append(sessionBatch([3]));
    await again.close();
    equal(await Deno.readTextFile(path), "1 1 s m1\n1 2 s m2\n1 3 s m3\n");
    ok(logs.some((l) => l.includes("WARN no session journal")), logs.join(""));
    // It made a new one: the next start knows the session again.
    const third = await FileStore.open(path, { durable: false, log });
    equal(await third.lastStored(1, 7n), 3);
    await third.close();
  });
});

Deno.test("FileStore with a torn journal keeps what came before the tear", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    await store.append(sessionBatch([1, 2]));
    await store.append(sessionBatch([3]));
    const copy = await crashCopy(dir, path);
    await store.close();
    const journal = `${copy}.sessions`;
    await Deno.truncate(journal, (await Deno.stat(journal)).size - 5); // the last record is torn
    const again = await FileStore.open(copy, { durable: false, log });
    equal(await again.lastStored(1, 7n), 2, "the batch whose record was torn is not counted");
    await again.close();
    ok(logs.some((l) => l.includes("torn or damaged tail")), logs.join(""));
    equal(await Deno.readTextFile(copy), "1 1 s m1\n1 2 s m2\n1 3 s m3\n", "no record lost");
  });
});

Deno.test("FileStore does not trust a journal that claims more than the data file holds", async () => {
  await withDir(async (dir, logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    await store.append(sessionBatch([1, 2, 3]));
    await store.close();
    await Deno.truncate(path, 9); // someone cut the data file
    const again = await FileStore.open(path, { durable: false, log });
    equal(await again.lastStored(1, 7n), null, "resends must be stored again, not refused");
    await again.close();
    ok(logs.some((l) => l.includes("session journal not trusted")), logs.join(""));
  });
});

Deno.test("FileStore carries the sessions across rotations and a reopen", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: true, log });
    await store.append(sessionBatch([1]));
    await store.rotate();
    await store.append(sessionBatch([2]));
    await Deno.rename(path, `${path}.moved`);
    await store.reopen();
    await store.append(sessionBatch([3]));
    const copy = await crashCopy(dir, path);
    await store.close();
    const again = await FileStore.open(copy, { durable: false, log });
    equal(await again.lastStored(1, 7n), 3);
    await again.close();
  });
});

Deno.test("FileStore forgets the least recently written sessions past maxSessions", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log, maxSessions: 2 });
    await store.append(sessionBatch([1], 1n));
    await store.append(sessionBatch([1], 2n));
    await store.append(sessionBatch([2], 1n)); // session 1 written again: now the most recent
    await store.append(sessionBatch([1], 3n));
    deepStrictEqual(
      await Promise.all([1n, 2n, 3n].map((s) => store.lastStored(1, s))),
      [2, null, 1],
    );
    await store.close();
    const again = await FileStore.open(path, { durable: false, log, maxSessions: 2 });
    deepStrictEqual(
      await Promise.all([1n, 2n, 3n].map((s) => again.lastStored(1, s))),
      [2, null, 1],
    );
    await again.close();
  });
});

Deno.test("FileStore cuts back a large batch (written asynchronously) that fails midway", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const files = new Files();
    const store = await FileStore.open(path, { durable: false, log, openFile: files.open });
    await store.append(batch("1 1 a x\n"));
    const file = files.last!;
    const write = file.write.bind(file);
    let calls = 0;
    file.write = (p: Uint8Array) => {
      if (++calls === 1) return write(p.subarray(0, 100_000));
      return Promise.reject(new Error("No space left on device (os error 28)"));
    };
    const big = Array.from({ length: 2000 }, (_, i) => `1 ${i + 2} a ${"y".repeat(60)}\n`).join("");
    await rejects(async () => await store.append(batch(big)), /No space left/);
    equal(await Deno.readTextFile(path), "1 1 a x\n");
    file.write = write;
    await store.append(batch(big));
    await store.close();
    equal(await Deno.readTextFile(path), "1 1 a x\n" + big);
    ok(calls >= 2, "the large batch went through the asynchronous write");
  });
});

Deno.test("FileStore keeps a small batch before append returns in written mode, and only then", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const store = await FileStore.open(path, { durable: false, log });
    equal(store.append(sessionBatch([1, 2])), undefined);
    equal(await Deno.readTextFile(path), "1 1 s m1\n1 2 s m2\n");
    equal(store.size, 18);
    equal(await store.lastStored(1, 7n), 2);
    // Over 64 KiB the write is asynchronous, so as not to hold the event loop.
    const big = store.append(batch(`1 3 s ${"x".repeat(64 * 1024)}\n`));
    ok(big instanceof Promise);
    await big;
    await store.close();
    const durable = await FileStore.open(path, { durable: true, log });
    const synced = durable.append(sessionBatch([4]));
    ok(synced instanceof Promise, "durable mode waits for the sync");
    await synced;
    equal(await durable.lastStored(1, 7n), 4);
    await durable.close();
  });
});

Deno.test("FileStore goes back to its asynchronous path after a failed synchronous write", async () => {
  await withDir(async (dir, _logs, log) => {
    const path = `${dir}/m.log`;
    const files = new Files();
    const store = await FileStore.open(path, { durable: false, log, openFile: files.open });
    equal(store.append(sessionBatch([1])), undefined);
    const file = files.last!;
    const writeSync = file.writeSync.bind(file);
    file.writeSync = (p: Uint8Array) => {
      writeSync(p.subarray(0, 3));
      throw new Error("No space left on device (os error 28)");
    };
    await rejects(async () => await store.append(sessionBatch([2])), /No space left/);
    equal(await Deno.readTextFile(path), "1 1 s m1\n");
    equal(await store.lastStored(1, 7n), 1);
    file.writeSync = writeSync;
    equal(store.append(sessionBatch([2])), undefined, "cut back already: synchronous again");
    await store.close();
    equal(await Deno.readTextFile(path), "1 1 s m1\n1 2 s m2\n");
    // The journal took the refused batch back: a restart knows msg_id 2, not a torn batch.
    const again = await FileStore.open(path, { durable: false, log });
    equal(await again.lastStored(1, 7n), 2);
    await again.close();
  });
});
