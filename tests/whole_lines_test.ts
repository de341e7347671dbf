import { deepStrictEqual, equal, ok } from "node:assert/strict";
import { concat } from "../src/io/concat.ts";
import { readWholeLines } from "../src/io/whole_lines.ts";
import { withTempDir } from "./support/server.ts";

const enc = new TextEncoder();

async function read(path: string, chunkBytes: number) {
  const chunks: Uint8Array[] = [];
  const result = await readWholeLines(path, (chunk) => chunks.push(chunk.slice()), chunkBytes);
  return { chunks, ...result };
}

Deno.test("readWholeLines passes whole lines only, grows for a long line, counts a torn tail", async () => {
  await withTempDir("msgserver_whole_lines_", async (dir) => {
    const path = `${dir}/lines`;
    const lines = ["a\n", "bb\n", "a line far longer than the chunk\n", "\n", "cccc\n"];
    const text = lines.join("") + "torn";
    await Deno.writeFile(path, enc.encode(text));
    for (const chunkBytes of [1, 2, 3, 8, 64, 1 << 20]) {
      const { chunks, bytes, tornBytes } = await read(path, chunkBytes);
      equal(bytes, text.length, `chunk ${chunkBytes}`);
      equal(tornBytes, 4, `chunk ${chunkBytes}`);
      for (const chunk of chunks) {
        ok(chunk.length > 0 && chunk.at(-1) === 0x0a, `chunk ${chunkBytes}: ends with LF`);
      }
      deepStrictEqual(concat(chunks), enc.encode(lines.join("")), `chunk ${chunkBytes}`);
    }
  });
});

Deno.test("readWholeLines on an empty file, and on one that ends with its line feed", async () => {
  await withTempDir("msgserver_whole_lines_", async (dir) => {
    await Deno.writeFile(`${dir}/empty`, new Uint8Array());
    deepStrictEqual(await read(`${dir}/empty`, 8), { chunks: [], bytes: 0, tornBytes: 0 });
    await Deno.writeFile(`${dir}/whole`, enc.encode("x\ny\n"));
    deepStrictEqual(await read(`${dir}/whole`, 1024), {
      chunks: [enc.encode("x\ny\n")],
      bytes: 4,
      tornBytes: 0,
    });
  });
});
