/**
 * Channel throughput: `tryPush` of 1,000 entries then one `takeAll` (the writer's batch), and
 * the worst case of one `takeAll` per `tryPush`.
 *
 * @module
 */

import { Channel } from "../src/server/channel.ts";

interface Item {
  readonly count: number;
  readonly bytes: number;
}

const ITEMS = 1000;
const item: Item = { count: 1, bytes: 100 };
const channel = new Channel<Item>({ maxRecords: 65536, maxBytes: 64 * 1024 * 1024 });

Deno.bench({
  name: "1,000 tryPush, 1 takeAll",
  group: "channel 1,000 items",
  baseline: true,
  fn() {
    for (let i = 0; i < ITEMS; i++) {
      if (!channel.tryPush(item)) throw new Error("channel full");
    }
    if (channel.takeAll().length !== ITEMS) throw new Error("lost items");
  },
});

Deno.bench({
  name: "1,000 x (tryPush, takeAll)",
  group: "channel 1,000 items",
  fn() {
    for (let i = 0; i < ITEMS; i++) {
      if (!channel.tryPush(item)) throw new Error("channel full");
      if (channel.takeAll().length !== 1) throw new Error("lost an item");
    }
  },
});
