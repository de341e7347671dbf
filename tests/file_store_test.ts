import { deepStrictEqual, equal, ok, rejects } from "node:assert/strict";
import { Logger } from "../src/log.ts";
import { FileStore, type OpenFile } from "../src/store/file_store.ts";
import type { Batch } from "../src/store/store.ts";
import { withTempDir } from "./helpers.ts";

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

/** Files in `dir` whose names start with `prefix`, sorted. */
async function filesIn(dir: string, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.startsWith(prefix)) names.push(e.name);
  return names.sort();
}

/** An OpenFile that hands out real files and lets the test break the one appended to. */
class Files {
  /** Throws this many of the next opens, as a process out of file descriptors does. */
  failOpens = 0;
  /** The last file opened for appending. */
  last: Deno.FsFile | null = null;
  readonly open: OpenFile = async (path, options) => {
    if (this.failOpens > 0) {
      this.failOpens--;
      throw new Deno.errors.Busy(`Too many open files (os error 24): open '${path}'`);
    }
    const file = await Deno.open(path, options);
    if (options.append) this.last = file;
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
    const write = file.write.bind(file);
    let calls = 0;
    file.write = (p: Uint8Array) => {
      // The first write takes half the batch; the next fails, as a disk filling up does.
      if (++calls === 1) return write(p.subarray(0, 5));
      return Promise.reject(new Error("No space left on device (os error 28)"));
    };
    await rejects(store.append(batch("1 2 a y\n1 3 a z\n")), /No space left/);
    equal(await Deno.readTextFile(path), "1 1 a x\n");
    equal(store.size, 8);
    file.write = write;
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
    const write = file.write.bind(file);
    const truncate = file.truncate.bind(file);
    file.write = (p: Uint8Array) =>
      write(p.subarray(0, 3)).then(() => Promise.reject(new Error("I/O error")));
    file.truncate = () => Promise.reject(new Error("Read-only file system"));
    await rejects(store.append(batch("1 1 a x\n")), /I\/O error/);
    ok(logs.some((l) => l.includes("cannot cut the file back")), logs.join(""));
    equal(await Deno.readTextFile(path), "1 1");
    file.write = write;
    // Still cannot cut back: the next batch is refused, not glued onto the partial line.
    await rejects(store.append(batch("1 2 a y\n")), /Read-only/);
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
