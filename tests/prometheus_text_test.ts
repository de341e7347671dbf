import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { BucketHistogram, renderPrometheus } from "../src/server/metrics.ts";
import { Scrape } from "../src/status/prometheus_text.ts";

Deno.test("Scrape.parse reads back what renderPrometheus writes: values, labels, histograms", () => {
  const h = new BucketHistogram([0.001, 0.01, 0.1]);
  for (const v of [0.0005, 0.002, 0.002, 0.05, 3]) h.observe(v);
  const text = renderPrometheus([
    { name: "a_total", help: "A.", type: "counter", value: 7 },
    { name: "g", help: "G.", type: "gauge", value: 2.5 },
    {
      name: "n_total",
      help: "N.",
      type: "counter",
      values: [{ labels: { code: "1" }, value: 3 }, { labels: { code: "4" }, value: 5 }],
    },
    { name: "t_seconds", help: "T.", type: "histogram", histogram: h },
  ]);
  const scrape = Scrape.parse(text);
  equal(scrape.value("a_total"), 7);
  equal(scrape.value("g"), 2.5);
  equal(scrape.value("n_total", { code: "4" }), 5);
  equal(scrape.value("n_total"), 8, "a counter split by a label adds up");
  equal(scrape.value("nope"), undefined);
  equal(scrape.type("t_seconds"), "histogram");
  deepEqual(scrape.histogram("t_seconds"), {
    buckets: [
      { le: 0.001, count: 1 },
      { le: 0.01, count: 3 },
      { le: 0.1, count: 4 },
      { le: Infinity, count: 5 },
    ],
    sum: h.sum,
    count: 5,
  });
  equal(scrape.histogram("a_total"), undefined);
});

Deno.test("Scrape.parse takes what other exporters write: escapes, spacing, timestamps, NaN, Inf", () => {
  const scrape = Scrape.parse(
    [
      "# HELP x_total Help with a \\\\ and \\n escape.",
      "# some comment",
      "",
      'x_total{path="/a \\"b\\"",why="line\\nfeed\\\\",} 1.5e3 1700000000000\r',
      '  spaced { a = "1" , b="2" }   -4',
      "not_a_number NaN",
      "up +Inf",
      "down -Inf",
      "lower inf",
      'h_bucket{le="+Inf"} 3',
    ].join("\n"),
  );
  deepEqual(scrape.find("x_total"), [{
    name: "x_total",
    labels: { path: '/a "b"', why: "line\nfeed\\" },
    value: 1500,
  }]);
  deepEqual(scrape.find("spaced", { b: "2" })[0]?.labels, { a: "1", b: "2" });
  equal(scrape.value("spaced"), -4);
  ok(Number.isNaN(scrape.value("not_a_number")));
  equal(scrape.value("up"), Infinity);
  equal(scrape.value("down"), -Infinity);
  equal(scrape.value("lower"), Infinity);
  deepEqual(scrape.histogram("h")?.buckets, [{ le: Infinity, count: 3 }]);
  equal(scrape.histogram("h")?.count, 3, "no _count: the +Inf bucket's");
});

Deno.test("Scrape.parse names the line that is not the format, and why", () => {
  const cases: [string, RegExp][] = [
    ["ok 1\nmissing_value\n", /^Cannot parse metrics line 2: expected a space and a value/],
    ['a{b="1} 2', /line 1: unterminated value of label "b"/],
    ['a{b="\\t"} 2', /line 1: bad escape "\\t" in the value of "b"/],
    ['a{1b="x"} 2', /line 1: expected a label name/],
    ['a{b="1" c="2"} 2', /expected , or } after label "b"/],
    ['a{b="1",b="2"} 2', /label "b" given twice/],
    ["a 12abc", /"12abc" is not a number/],
    ["a 1 2.5", /timestamp "2.5" is not an integer/],
    ["a 1 2 3", /unexpected "3" at the end/],
    ["9a 1", /expected a metric name/],
  ];
  for (const [text, message] of cases) {
    throws(
      () => Scrape.parse(text),
      (e: Error) => e instanceof SyntaxError && message.test(e.message),
    );
  }
});
